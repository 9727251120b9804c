"""The columnar checks give, row by row, what `LoadedModel.prepare` gives record by record:
the same values for the rows that pass and the same reason for each row that fails."""

from __future__ import annotations

import random

import numpy as np
import pytest

from contract import scoring_pb2 as pb
from contract.columns import Arrived, data_type_of, from_ipc, to_columns, to_ipc
from contract.values import inputs_of, make_record
from scoring.backends.base import InputField, LoadedModel
from scoring.columns import model_inputs
from scoring.errors import RecordError

FIELDS = {
    "a": InputField("a", "float"),
    "b": InputField("b", "int"),
    "s": InputField("s", "string"),
    "t": InputField("t", "float", (2, 2)),
    "r": InputField("r", "float", (None,)),
}


class Fields(LoadedModel):
    input_fields = FIELDS

    def predict(self, batch):
        return [{} for _ in batch]

    def warm_up_inputs(self):
        return []

    def release(self):
        pass


def random_value(rng: random.Random):
    return rng.choice([
        rng.uniform(-5, 5), float("nan"), float("inf"), -float("inf"), rng.randint(-9, 9), 1 << 62,
        "text", b"\x00bytes", "",
        np.ones((2, 2), np.float32) * rng.random(), np.array([[1.0, np.nan], [0, 0]], np.float32),
        np.ones((3,), np.float32), np.ones((1, 4), np.float32), np.zeros((0,), np.float32),
        np.ones((2, 2, 1), np.float32),
    ])


def random_records(n: int, seed: int) -> list[pb.DataRecord]:
    rng = random.Random(seed)
    good = {"a": 1.5, "b": 3, "s": "x", "t": np.eye(2, dtype=np.float32), "r": np.arange(3, dtype=np.float32)}
    records = []
    for i in range(n):
        inputs = dict(good)
        for name in rng.sample(sorted(FIELDS) + ["extra"], rng.randint(0, 3)):
            if rng.random() < 0.25:
                inputs.pop(name, None)
            else:
                inputs[name] = random_value(rng)
        records.append(make_record(f"r{i}", "dt", inputs, 0))
    return records


def expected(record: pb.DataRecord):
    try:
        return Fields().prepare(inputs_of(record)), None
    except RecordError as err:
        return None, str(err)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rows_pass_and_fail_as_records_do(seed):
    records = random_records(400, seed)
    batch = from_ipc(to_ipc(to_columns("dt", [Arrived(r, False, r.SerializeToString()) for r in records])))
    assert data_type_of(batch) == "dt" and batch.num_rows == len(records)
    checked = model_inputs(batch, FIELDS)
    passed = 0
    for i, record in enumerate(records):
        values, reason = expected(record)
        assert checked.reasons[i] == reason, f"row {i}: {dict(record.inputs)}"
        if values is not None:
            passed += 1
            for name, want in values.items():
                got = checked.values[name][i]
                assert np.array_equal(np.asarray(got), np.asarray(want)), f"row {i}, input {name}"
                assert np.asarray(got).dtype == np.asarray(want).dtype or name in ("a", "b", "s")
    assert 0 < passed < len(records)  # the mix has both
    assert checked.values["t"].shape == (len(records), 2, 2) and checked.values["t"].dtype == np.float32


def test_a_batch_where_no_row_sends_an_input_fails_every_row_with_the_same_reason():
    records = [make_record(f"r{i}", "dt", {"b": i, "s": "x"}, 0) for i in range(3)]
    checked = model_inputs(to_columns("dt", [Arrived(r, True, b"{}") for r in records]), FIELDS)
    assert set(checked.reasons) == {"missing input(s) ['a', 'r', 't']; the model takes ['a', 'b', 'r', 's', 't']"}
    assert not checked.passed.any()
