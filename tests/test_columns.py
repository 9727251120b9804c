"""The columnar checks give, row by row, what `LoadedModel.prepare` gives record by record:
the same values for the rows that pass and the same reason for each row that fails."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from contract import scoring_pb2 as pb
from contract.columns import (
    Arrived,
    data_type_of,
    from_ipc,
    outcomes_to_columns,
    to_columns,
    to_ipc,
)
from contract.values import inputs_of, make_record
from scoring import messages
from scoring.backends.base import InputField, LoadedModel
from scoring.batch import score_batch
from scoring.columns import model_inputs, score_columns
from scoring.errors import RecordError
from scoring.loader import Servable
from scoring.verification import with_tensors
from tests.conftest import load_samples
from tests.test_backends import SAMPLES, assert_close, load

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


@pytest.mark.parametrize("sample", SAMPLES)
def test_each_backend_scores_a_batch_of_columns_as_it_scores_records(samples, tmp_path, sample):
    """The held-out samples, with bad rows among them: the same outputs and the same reasons
    as scoring.batch gives the same records one dict each."""
    model = load(samples[sample], tmp_path)
    rows = load_samples(samples[sample])["inputs"]
    records = [make_record(f"r{i}", "dt", with_tensors(row), 0) for i, row in enumerate(rows)]
    first = next(iter(model.input_fields))
    records.insert(1, make_record("missing", "dt", {}, 0))
    records.insert(3, make_record("wrong-kind", "dt", {**inputs_of(records[0]), first: object_of_other_kind(model, first)}, 0))
    batch = to_columns("dt", [Arrived(r, False, r.SerializeToString()) for r in records])
    scored = score_columns(model, batch)
    outcomes = score_batch(model, [inputs_of(r) for r in records])
    assert [o.error and str(o.error) for o in outcomes] == scored.reasons
    assert [o.error.stage if o.error else "" for o in outcomes] == scored.stages
    for i, outcome in enumerate(outcomes):
        if outcome.ok:
            assert_close({name: column[i] for name, column in scored.outputs.items()}, outcome.outputs)
    assert sum(r is None for r in scored.reasons) == len(rows)


def object_of_other_kind(model, name: str):
    return 1.0 if model.input_fields[name].kind == "string" else "not a number"


def test_a_row_that_makes_the_model_throw_fails_alone_and_a_non_finite_output_fails_its_row():
    class Picky(Fields):
        input_fields = {"a": InputField("a", "float")}

        def predict(self, batch):
            if any(r["a"] == 13 for r in batch):
                raise RuntimeError("unlucky")
            return [{"y": float("inf") if r["a"] == 7 else 2 * r["a"]} for r in batch]

    records = [make_record(f"r{i}", "dt", {"a": float(i)}, 0) for i in range(20)]
    scored = score_columns(Picky(), to_columns("dt", [Arrived(r, False, b"") for r in records]))
    assert scored.reasons[13] == "the model threw: unlucky" and scored.stages[13] == "score"
    assert scored.reasons[7] == "the model returned non-finite output(s) ['y']"
    assert [scored.outputs["y"][i] for i in (0, 5, 19)] == [0.0, 10.0, 38.0]
    assert scored.outputs["y"][13] is None and scored.outputs["y"][7] is None
    assert sum(r is None for r in scored.reasons) == 18


def without_times(message: bytes) -> object:
    if message.startswith(b"{"):
        doc = json.loads(message)
        doc.pop("scoring_time_ms")
        return doc
    for kind in (pb.ScoringResult, pb.DeadLetter):
        try:
            parsed = kind.FromString(message)
        except DecodeError:
            continue
        parsed.ClearField("scoring_time_ms" if kind is pb.ScoringResult else "time_ms")
        return kind.__name__, parsed.SerializeToString(deterministic=True)
    raise AssertionError(f"not a result nor a dead letter: {message[:60]!r}")


@pytest.mark.parametrize("sample", SAMPLES)
def test_messages_written_from_columns_are_those_written_record_by_record(samples, tmp_path, sample):
    """Results (protobuf or JSON, as each record came) and dead letters from a scored batch of
    columns: the same messages, but for their times, as the record path writes."""
    model = load(samples[sample], tmp_path)
    servable = Servable(f"{sample}-model", 3, 0, model)
    rows = load_samples(samples[sample])["inputs"]
    records = [make_record(f"r{i}", "dt", with_tensors(row), i) for i, row in enumerate(rows)]
    records.insert(2, make_record("missing", "dt", {}, 7))
    arrived = [Arrived(r, i % 3 == 0, r.SerializeToString()) for i, r in enumerate(records)]
    batch = to_columns("dt", arrived)
    scored = score_columns(model, batch)
    columns = outcomes_to_columns(batch, [servable.key] * batch.num_rows, scored.stages, scored.reasons,
                                  scored.outputs)
    from_columns = [without_times(m) for _, m in messages.from_columns(from_ipc(to_ipc(columns)))]
    by_record = []
    for a, outcome in zip(arrived, score_batch(model, [inputs_of(r) for r in records]), strict=True):
        message, failure = messages.result_or_failure(a.record, outcome, servable, a.json)
        by_record.append(without_times(message or messages.dead_letter(a.original, *failure, a.record, servable.key)))
    assert from_columns == by_record


def test_outputs_of_every_kind_survive_the_columns_and_an_unwritable_one_fails_its_row():
    class Kinds(Fields):
        input_fields = {"a": InputField("a", "float")}

        def predict(self, batch):
            return [{"f": r["a"] / 2, "i": np.int32(r["a"]), "flag": r["a"] > 1, "s": "ok", "b": b"\x00\xff",
                     "t": np.arange(6, dtype=np.float64).reshape(2, 3) * r["a"],
                     "bad": np.array(["x"]) if r["a"] == 2 else 1.0} for r in batch]

    records = [make_record(f"r{i}", "dt", {"a": float(i)}, 0) for i in range(4)]
    arrived = [Arrived(r, False, r.SerializeToString()) for r in records]
    servable = Servable("kinds", 1, 0, Kinds())
    batch = to_columns("dt", arrived)
    scored = score_columns(servable.model, batch)
    columns = outcomes_to_columns(batch, [servable.key] * 4, scored.stages, scored.reasons, scored.outputs)
    written = messages.from_columns(from_ipc(to_ipc(columns)))
    assert [ok for ok, _ in written] == [True, True, False, True]
    dead = pb.DeadLetter.FromString(written[2][1])
    assert (dead.stage, dead.original) == ("score", arrived[2].original)
    assert dead.reason == "the model's outputs cannot be written as a ScoringResult: string tensors are not supported as outputs"
    result = pb.ScoringResult.FromString(written[3][1])
    assert list(result.outputs["t"].tensor_value.shape) == [2, 3]
    assert list(result.outputs["t"].tensor_value.values) == [0, 3, 6, 9, 12, 15]
    assert (result.outputs["i"].int64_value, result.outputs["flag"].int64_value) == (3, 1)
    assert (result.outputs["s"].string_value, result.outputs["b"].bytes_value) == ("ok", b"\x00\xff")
    assert result.outputs["f"].double_value == 1.5 and result.outputs["bad"].double_value == 1.0


def test_a_tensor_output_given_as_one_array_is_written_row_by_row_with_its_shape():
    class Stacked(Fields):
        input_fields = {"a": InputField("a", "float")}

        def predict_columns(self, columns, rows):
            return {"t": np.arange(6, dtype=np.float32).reshape(1, 2, 3) * columns["a"].reshape(-1, 1, 1)}

    records = [make_record(f"r{i}", "dt", {"a": float(i)}, 0) for i in range(3)]
    batch = to_columns("dt", [Arrived(r, False, b"") for r in records])
    scored = score_columns(Stacked(), batch)
    columns = outcomes_to_columns(batch, [("stacked", 1)] * 3, scored.stages, scored.reasons, scored.outputs)
    results = [pb.ScoringResult.FromString(m) for _, m in messages.from_columns(columns)]
    assert [list(r.outputs["t"].tensor_value.shape) for r in results] == [[2, 3]] * 3
    assert list(results[2].outputs["t"].tensor_value.values) == [0, 2, 4, 6, 8, 10]
