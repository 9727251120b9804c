"""The columnar path's serving core (scoring.serving) without a cluster: one batch in, one
batch of outcomes out, a rollout's candidate beside the current model, and the crash journal."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from contract import scoring_pb2 as pb
from contract.columns import Arrived, digest, to_columns
from contract.values import make_record
from scoring.backends.base import InputField, LoadedModel
from scoring.loader import Servable
from scoring.poison import CrashJournal
from scoring.rollout import Progress, takes_part
from scoring.serving import POISONED, BatchServer, Rollout, digests


class Scaled(LoadedModel):
    """y = factor * x; fails (throws) on x = 13."""

    input_fields = {"x": InputField("x", "float"), "customer": InputField("customer", "string")}

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def predict(self, batch):
        if any(r["x"] == 13 for r in batch):
            raise ValueError("thirteen")
        return [{"y": self.factor * r["x"]} for r in batch]

    def warm_up_inputs(self):
        return []

    def release(self):
        pass


def servable(name: str, version: int, factor: float) -> Servable:
    return Servable(name, version, pb.ONNX, Scaled(factor))


def batch_of(xs, customers=None) -> pa.RecordBatch:
    customers = customers or [f"c{i % 7}" for i in range(len(xs))]
    records = [make_record(f"r{i}", "wine", {"x": float(x), "customer": c}) for i, (x, c) in
               enumerate(zip(xs, customers, strict=True))]
    return to_columns("wine", [Arrived(r, i % 2 == 0, r.SerializeToString()) for i, r in enumerate(records)])


def server(tmp_path, calls: list | None = None) -> BatchServer:
    journal = CrashJournal(tmp_path / "journal.json")
    return BatchServer(journal, lambda s, n, failed, secs: calls.append((s.key, n, failed)) if calls is not None else None)


def test_a_batch_is_scored_in_one_call_and_a_row_that_throws_fails_alone(tmp_path):
    calls: list = []
    served = server(tmp_path, calls).serve(batch_of([1, 2, 13, 4]), servable("m", 1, 2.0), None)
    (results,) = served.results
    assert results.column("y").to_pylist()[:2] == [2.0, 4.0] and results.column("y")[3].as_py() == 8.0
    assert results.column("reason").to_pylist() == [None, None, "the model threw: thirteen", None]
    assert results.column("stage").to_pylist() == [None, None, "score", None]
    assert results.column("model_version").to_pylist() == [1] * 4
    assert (served.scored, served.failed) == (3, 1)
    assert calls == [(("m", 1), 4, 1)]  # one call accounted for the batch (the halving is inside it)
    assert results.column("original")[2].as_py() and results.column("original")[0].as_py() is None


def canary(percent: float, send_pairs: bool = True, entity: str = "customer") -> Rollout:
    d = pb.ModelDescriptor(name="m", version=2, data_type="wine")
    d.rollout.mode = pb.RolloutPolicy.CANARY
    d.rollout.canary_percent = percent
    d.rollout.entity_field = entity
    d.rollout.gate.tolerance = 0.5
    return Rollout(servable("m", 2, 3.0), d, Progress(started_ms=0), send_pairs)


def test_a_canary_serves_its_entities_share_and_both_models_are_compared_on_it(tmp_path):
    xs = [x for x in range(1, 42) if x != 13]  # 13 makes both models throw
    batch = batch_of(xs)
    rollout = canary(50)
    served = server(tmp_path).serve(batch, servable("m", 1, 2.0), rollout)
    (results,) = served.results
    salt = "m:2"
    chosen = [i for i in range(40) if takes_part(rollout.descriptor.rollout, salt, f"r{i}", {"customer": f"c{i % 7}"})]
    assert 0 < len(chosen) < 40  # not vacuous: both models answer some rows
    versions = results.column("model_version").to_pylist()
    assert [i for i, v in enumerate(versions) if v == 2] == chosen
    ys = results.column("y").to_pylist()
    assert all(ys[i] == (3.0 if i in chosen else 2.0) * xs[i] for i in range(40))
    assert rollout.progress.records == len(chosen) == rollout.progress.compared
    assert len(served.pairs) == len(chosen)
    pair = pb.ShadowPair.FromString(served.pairs[0])
    assert pair.served_by_candidate and pair.record_id == f"r{chosen[0]}" and pair.disagreeing == ["y"]
    # Sticky per entity: a row of the same customer in another batch goes the same way.
    again = server(tmp_path).serve(batch_of([5], [f"c{chosen[0] % 7}"]), servable("m", 1, 2.0), canary(50))
    assert again.results[0].column("model_version").to_pylist() == [2]


def test_a_shadow_candidate_is_compared_but_never_serves(tmp_path):
    rollout = canary(0, send_pairs=False)
    rollout.descriptor.rollout.mode = pb.RolloutPolicy.SHADOW
    served = server(tmp_path).serve(batch_of([1, 2, 3]), servable("m", 1, 2.0), rollout)
    assert served.results[0].column("model_version").to_pylist() == [1, 1, 1]
    assert rollout.progress.records == 3 and not served.pairs


def test_after_a_crash_the_rows_in_flight_are_scored_alone_and_a_twice_crashed_one_is_dead_lettered(tmp_path):
    batch = batch_of([1, 2, 3, 4])
    raws = batch.column("original").to_pylist()
    journal = CrashJournal(tmp_path / "journal.json")
    journal.scoring_digests(digests(batch.slice(1, 2)))  # the process dies scoring rows 1 and 2 ...
    journal.close()
    assert digests(batch.slice(1, 2)) == digest(raws[1]) + digest(raws[2])
    journal = CrashJournal(tmp_path / "journal.json")
    journal.scoring_digests(digests(batch.slice(2, 1)))  # ... then, restarted, row 2 alone again
    journal.close()
    journal = CrashJournal(tmp_path / "journal.json", max_crashes=2)
    assert [journal.crashes_of(r) for r in raws] == [0, 1, 2, 0]
    calls: list = []
    served = BatchServer(journal, lambda s, n, failed, secs: calls.append(n)).serve(
        batch, servable("m", 1, 2.0), None)
    poisoned, alone, rest = served.results
    assert poisoned.column("reason").to_pylist() == [POISONED.format(2)]
    assert poisoned.column("record_id").to_pylist() == ["r2"] and poisoned.column("stage").to_pylist() == ["score"]
    assert alone.column("record_id").to_pylist() == ["r1"] and rest.column("record_id").to_pylist() == ["r0", "r3"]
    assert calls == [1, 2]
    assert journal.crashes == {digest(raws[2]).hex(): 2}  # row 1 scored this time: forgotten
    assert (served.scored, served.failed) == (3, 1)


def test_digests_of_a_slice_are_its_rows_digests(tmp_path):
    batch = batch_of(list(np.arange(10.0)))
    part = batch.slice(3, 4)
    assert digests(part) == b"".join(digest(r) for r in part.column("original").to_pylist())
