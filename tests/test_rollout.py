"""Rollouts as plain logic: the gate, sticky assignment, and the per-key lifecycle driven
with a clock the test moves (no Flink, no Kafka: the MiniCluster tests are in
tests/test_rollout_job.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from contract import scoring_pb2 as pb
from contract.rollout import policy_problem
from scoring.batch import Outcome
from scoring.errors import PredictionError
from scoring.lifecycle import (
    Abandoned,
    GatePassed,
    KeyModels,
    RollingBack,
    RolloutStarted,
    Swapped,
    review_watch,
    settle,
    take_up,
)
from scoring.loader import Servable
from scoring.manager import READY, LoadStatus
from scoring.rollout import (
    FAILED,
    PASSED,
    PENDING,
    Progress,
    Watch,
    agrees,
    from_json,
    judge,
    p99,
    share_of,
    takes_part,
    to_json,
)

SHADOW, CANARY = pb.RolloutPolicy.SHADOW, pb.RolloutPolicy.CANARY


def desc(version: int, mode: int = pb.RolloutPolicy.IMMEDIATE, action: int = pb.ModelDescriptor.DEPLOY,
         t: int = 0, **gate) -> pb.ModelDescriptor:
    d = pb.ModelDescriptor(name="m", data_type="d", version=version, model_type=pb.PMML,
                           action=action, publish_time_ms=t, location="http://x/")
    d.rollout.mode = mode
    d.rollout.gate.CopyFrom(pb.Gate(**gate))
    return d


class FakeModel:
    def release(self):
        pass


def ready(d: pb.ModelDescriptor) -> LoadStatus:
    return LoadStatus(READY, Servable(d.name, d.version, d.model_type, FakeModel()))


def ok(**outputs) -> Outcome:
    return Outcome(outputs=outputs)


BAD = Outcome(error=PredictionError("the model threw: boom"))


# ---- comparing outputs ------------------------------------------------------------------------
def test_outputs_agree_by_class_by_tolerance_or_by_argmax():
    assert agrees("7", "7", 0) and not agrees("7", "6", 0)
    assert agrees(3, 3, 0.5) and not agrees(3, 4, 5)  # integers are classes: never "close enough"
    assert agrees(0.50, 0.52, 0.05) and not agrees(0.50, 0.56, 0.05)
    assert agrees(np.array([0.1, 0.7, 0.2]), np.array([0.3, 0.4, 0.3]), 0)  # same argmax
    assert not agrees(np.array([0.1, 0.7, 0.2]), np.array([0.5, 0.4, 0.1]), 1)
    assert not agrees(np.array([1.0, 2.0]), np.array([1.0, 2.0, 3.0]), 1)  # other shape


def test_a_batch_counts_agreement_per_output_and_failures_on_either_side():
    p = Progress(started_ms=1)
    found = p.add([ok(y=1.0, label="a"), ok(y=2.0, label="b"), ok(y=3.0, label="c"), BAD],
                  [ok(y=1.01, label="a"), ok(y=2.5, label="b"), BAD, ok(y=0.0, label="x")],
                  tolerance=0.1, us_current=10, us_candidate=20)
    assert found == [[], ["y"], None, None]
    assert (p.records, p.compared, p.candidate_failed, p.current_failed) == (4, 2, 1, 1)
    assert p.agreement() == {"y": 0.5, "label": 1.0}
    assert p.error_rate() == 0.25
    assert 1.9 < p.latency_ratio() < 2.1


def test_p99_of_the_latency_histogram_is_within_a_bucket():
    p = Progress()
    for us in [100] * 98 + [1000, 1000]:
        p.add([ok(y=1)], [ok(y=1)], 0, us, us)
    assert 0.84 * 1000 <= p99(p.latency_current) <= 1.19 * 1000
    assert p99({}) == 0.0


# ---- the gate ---------------------------------------------------------------------------------
def counted(records: int, agreed: int, candidate_failed: int = 0, started_ms: int = 0) -> Progress:
    compared = records - candidate_failed
    return Progress(started_ms=started_ms, records=records, compared=compared,
                    candidate_failed=candidate_failed, agreed={"y": agreed})


def test_nothing_passes_before_min_records_and_a_slow_rollout_times_out():
    gate = pb.Gate(min_records=1000, min_agreement=0.9, max_duration_ms=60_000)
    assert judge(gate, counted(999, 999), now_ms=59_999).outcome == PENDING
    timed_out = judge(gate, counted(412, 412), now_ms=60_000)
    assert timed_out == judge(gate, counted(412, 412), now_ms=60_000)  # pure
    assert timed_out.outcome == FAILED and "only 412 of 1,000 records in 60 s" in timed_out.reason
    assert judge(pb.Gate(), counted(999, 0), 10**9).outcome == PENDING  # default: 1,000, no limit


def test_the_worst_check_decides_and_the_reason_names_the_numbers():
    gate = pb.Gate(min_records=100, min_agreement=0.95, max_error_rate=0.01)
    passed = judge(gate, counted(100, 99), 0)
    assert passed.outcome == PASSED and "agreement on 'y' 0.990 >= 0.95" in passed.reason
    disagreeing = judge(gate, counted(100, 91), 0)
    assert disagreeing.outcome == FAILED
    assert disagreeing.reason == "agreement on 'y' 0.910 < 0.95 after 100 records"
    failing = judge(gate, counted(100, 97, candidate_failed=3), 0)
    assert failing.outcome == FAILED and "error rate 0.030 > 0.01" in failing.reason
    assert "agreement" not in failing.reason  # 97 of 97 compared agreed
    off = pb.Gate(min_records=100)  # zero turns a check off
    assert judge(off, counted(100, 0, candidate_failed=50), 0).outcome == PASSED


def test_policies_that_cannot_run_are_named():
    assert "canary_percent 0" in policy_problem(pb.RolloutPolicy(mode=CANARY))
    assert "canary_percent 150" in policy_problem(pb.RolloutPolicy(mode=CANARY, canary_percent=150))
    assert "sample 2" in policy_problem(pb.RolloutPolicy(mode=SHADOW, sample=2))
    assert policy_problem(pb.RolloutPolicy(mode=SHADOW, sample=0.2)) == ""


# ---- who takes part ---------------------------------------------------------------------------
def test_canary_assignment_is_sticky_per_entity_and_near_the_asked_share():
    policy = pb.RolloutPolicy(mode=CANARY, canary_percent=20, entity_field="customer")
    chosen = [takes_part(policy, "m:2", f"r{i}", {"customer": f"c{i % 500}"}) for i in range(10_000)]
    by_entity: dict[int, set[bool]] = {}
    for i, c in enumerate(chosen):
        by_entity.setdefault(i % 500, set()).add(c)
    assert all(len(v) == 1 for v in by_entity.values())  # one entity, one model
    share = sum(1 for v in by_entity.values() if True in v) / 500
    assert 0.15 < share < 0.25
    assert not takes_part(policy, "m:2", "r1", {})  # no entity: stays with the current model
    wider = pb.RolloutPolicy(mode=CANARY, canary_percent=40, entity_field="customer")
    assert all(takes_part(wider, "m:2", "r", {"customer": f"c{i}"}) for i in range(500)
               if takes_part(policy, "m:2", "r", {"customer": f"c{i}"}))  # raising only adds


def test_the_share_is_the_same_in_every_process():
    keys = [f"customer-{i}" for i in range(20)]
    other = subprocess.run(  # another interpreter with another string-hash seed
        [sys.executable, "-c", f"from scoring.rollout import share_of; print([share_of(k, 'm:2') for k in {keys!r}])"],
        env={**os.environ, "PYTHONHASHSEED": "12345"}, capture_output=True, text=True, check=True)
    assert json.loads(other.stdout) == [share_of(k, "m:2") for k in keys]
    sample = pb.RolloutPolicy(mode=SHADOW, sample=0.25)
    picked = sum(takes_part(sample, "m:2", f"r{i}", {}) for i in range(10_000))
    assert 2_200 < picked < 2_800
    assert all(takes_part(pb.RolloutPolicy(mode=SHADOW), "m:2", f"r{i}", {}) for i in range(100))


# ---- the lifecycle of a rollout, with a clock the test moves ------------------------------------
def test_shadow_starts_when_ready_and_is_promoted_when_its_gate_passes():
    km = KeyModels(current=desc(1))
    v2 = desc(2, SHADOW, min_records=10, min_agreement=0.9)
    assert take_up(km, v2).superseded is None and km.rollout is not None
    assert isinstance(settle(km, ready(v2), now_ms=1_000), RolloutStarted)
    assert km.current == desc(1) and km.rollout.started_ms == 1_000
    assert settle(km, ready(v2), now_ms=2_000) is None  # no records yet
    km.rollout.add([ok(y=1.0)] * 10, [ok(y=1.0)] * 10, 0, 5, 5)
    swapped = settle(km, ready(v2), now_ms=3_000)
    assert isinstance(swapped, Swapped) and swapped.promoted.startswith("10 records; agreement on 'y' 1.000")
    assert (km.current, km.next, km.rollout) == (v2, None, None)


def test_a_disagreeing_shadow_is_abandoned_and_not_taken_up_again():
    km = KeyModels(current=desc(1))
    v3 = desc(3, SHADOW, min_records=10, min_agreement=0.99)
    take_up(km, v3)
    settle(km, ready(v3), 0)
    km.rollout.add([ok(y=1.0)] * 10, [ok(y=1.0)] * 5 + [ok(y=9.0)] * 5, 0, 5, 5)
    abandoned = settle(km, ready(v3), 1)
    assert isinstance(abandoned, Abandoned) and abandoned.descriptor == v3
    assert abandoned.reason == "agreement on 'y' 0.500 < 0.99 after 10 records"
    assert abandoned.progress.compared == 10
    assert (km.current, km.next, km.rollout) == (desc(1), None, None)
    assert take_up(km, v3) is None


def test_manual_promotion_waits_for_a_promote_message():
    km = KeyModels(current=desc(1))
    v2 = desc(2, CANARY, min_records=5, manual_promotion=True, watch_ms=1_000, max_error_rate=0.5)
    take_up(km, v2)
    settle(km, ready(v2), 0)
    km.rollout.add([ok(y=1)] * 5, [ok(y=1)] * 5, 0, 5, 5)
    assert isinstance(settle(km, ready(v2), 10), GatePassed)
    assert settle(km, ready(v2), 20) is None and km.current == desc(1)  # reported once, waits
    promote = desc(2, action=pb.ModelDescriptor.PROMOTE, t=99)
    taken = take_up(km, promote)
    assert taken.promotion and km.next.rollout.gate.watch_ms == 1_000  # the rollout's gate stays
    swapped = settle(km, ready(promote), 30)
    assert swapped.promoted == "promoted by a person (PROMOTE)" and km.watch.until_ms == 1_030
    assert take_up(km, promote) is None  # not loaded again


def test_a_promote_without_a_rollout_deploys_at_once():
    km = KeyModels(current=desc(1))
    promote = desc(2, action=pb.ModelDescriptor.PROMOTE, t=5)
    assert not take_up(km, promote).promotion and km.rollout is None
    assert isinstance(settle(km, ready(promote), 0), Swapped)


def test_a_newer_version_supersedes_a_rollout_and_a_first_model_never_waits_for_a_gate():
    km = KeyModels(current=desc(1))
    v2 = desc(2, SHADOW)
    take_up(km, v2)
    v3 = desc(3, SHADOW)
    assert take_up(km, v3).superseded == v2 and km.rollout == Progress()
    first = KeyModels()
    take_up(first, desc(1, SHADOW))
    assert first.rollout is None and isinstance(settle(first, ready(desc(1, SHADOW)), 0), Swapped)


def test_a_promoted_model_that_fails_its_watch_is_rolled_back_once():
    km = KeyModels(current=desc(1))
    v2 = desc(2, SHADOW, min_records=1, watch_ms=10_000, max_error_rate=0.05)
    take_up(km, v2)
    settle(km, ready(v2), 0)
    km.rollout.add([ok(y=1)], [ok(y=1)], 0, 5, 5)
    settle(km, ready(v2), 100)
    assert km.watch is not None and km.previous == desc(1)
    km.watch.add(scored=95, failed=4)
    assert review_watch(km, 200) is None  # 4 of 99: not enough records yet, and under the rate
    km.watch.add(scored=0, failed=4)
    back = review_watch(km, 300)
    assert back == RollingBack(v2, desc(1), "it failed 8 of 103 records (0.078 > 0.05) within its watch window")
    assert km.next == desc(1) and km.watch is None
    swapped = settle(km, ready(desc(1)), 400)
    assert (swapped.old, swapped.new) == (v2, desc(1)) and km.watch is None  # no watch on the way back
    assert take_up(km, v2) is None  # the broadcast still names v2: it is not taken up again


def test_a_watch_that_lasts_its_window_ends_quietly():
    km = KeyModels(current=desc(2), previous=desc(1))
    km.watch = from_json(json.loads(json.dumps(to_json(None, Watch(until_ms=1_000, max_error_rate=0.1)))))[1]
    assert review_watch(km, 1_000) is None and km.watch is None and km.previous is None




def test_progress_survives_a_round_trip_through_keyed_state():
    p = Progress(started_ms=5)
    p.add([ok(y=1.0)], [ok(y=2.0)], 0.1, 3, 4)
    doc = json.loads(json.dumps(to_json(p, None)))
    assert from_json(doc) == (p, None)
