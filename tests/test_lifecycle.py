"""Pure logic of the model lifecycle: acceptance policy, the manager, statistics, status."""

from __future__ import annotations

import threading
import time

import pytest

from contract import scoring_pb2 as pb
from model_store.status import fold
from scoring.errors import ModelLoadError
from scoring.lifecycle import (
    GaveUp,
    HoldLimits,
    KeyModels,
    TakenUp,
    hold_refusal,
    next_poll_ms,
    scores_at_once,
    settle,
    take_up,
    unservable_reason,
)
from scoring.loader import DescriptorError, Servable, parse_descriptor
from scoring.manager import ERROR, LOADING, READY, LoadStatus, ModelManager
from scoring.policy import accept, over_capacity
from scoring.stats import ModelStats, OperatorTotals

ROLLBACK = pb.ModelDescriptor.ROLLBACK


def desc(version: int, name: str = "m", action: int = pb.ModelDescriptor.DEPLOY, t: int = 0) -> pb.ModelDescriptor:
    return pb.ModelDescriptor(name=name, data_type="d", version=version, model_type=pb.PMML,
                              action=action, publish_time_ms=t, location="http://x/")


def test_policy_accepts_newer_versions_and_explicit_rollbacks_only():
    assert accept(None, desc(1)) is None
    assert accept(desc(1), desc(2)) is None
    assert "not newer than v2" in accept(desc(2), desc(1))
    assert "not newer" in accept(desc(2), desc(2, t=5))
    assert "duplicate" in accept(desc(2), desc(2))
    assert accept(desc(2), desc(1, action=ROLLBACK)) is None
    assert accept(desc(5, name="a"), desc(1, name="b")) is None  # another model takes over
    promote = pb.ModelDescriptor.PROMOTE
    assert accept(desc(2), desc(2, action=promote, t=5)) is None  # ends v2's rollout
    assert "not newer than v2" in accept(desc(2), desc(1, action=promote, t=5))


def sequenced(version: int, sequence: int, action: int = pb.ModelDescriptor.DEPLOY) -> pb.ModelDescriptor:
    d = desc(version, action=action, t=sequence)
    d.sequence = sequence
    return d


def test_with_trusted_keys_a_descriptor_must_carry_a_sequence_above_the_last_accepted():
    promote = pb.ModelDescriptor.PROMOTE
    assert accept(sequenced(2, 20), sequenced(3, 30), sequenced=True) is None
    assert accept(sequenced(2, 20), sequenced(1, 30, ROLLBACK), sequenced=True) is None
    assert accept(sequenced(2, 20), sequenced(2, 30, promote), sequenced=True) is None
    # Replays of statements signed before the last accepted one: each refused, saying why.
    for old in (sequenced(1, 19, ROLLBACK), sequenced(2, 20, promote), sequenced(3, 10)):
        reason = accept(sequenced(2, 20), old, sequenced=True)
        assert "not above 20" in reason and "replayed or out-of-date" in reason, reason
    # Without trusted keys the sequence decides nothing (descriptors may carry none).
    assert accept(sequenced(2, 20), sequenced(1, 19, ROLLBACK)) is None


def test_records_no_model_serves_are_held_within_bounds_only():
    limits = HoldLimits(per_key=10, total=100, unpublished_ms=5_000)
    assert hold_refusal(held=3, published=False, held_total=50, waited_ms=4_999, limits=limits) == ""
    assert "no model has been published" in hold_refusal(3, False, 50, 5_000, limits)
    assert hold_refusal(3, True, 50, 0, limits) == ""  # a descriptor came: no clock
    assert "10 records are already held (--max-held-records)" in hold_refusal(10, True, 50, 0, limits)
    assert "holds 100 records" in hold_refusal(0, False, 100, 0, limits)
    waits = [next_poll_ms(0, 100, 2_000)]
    while len(waits) < 7:
        waits.append(next_poll_ms(waits[-1], 100, 2_000))
    assert waits == [100, 200, 400, 800, 1_600, 2_000, 2_000]


def test_broadcast_state_is_bounded_in_data_types_and_inline_bytes():
    accepted = {f"t{i}": desc(1) for i in range(3)}
    inline = pb.ModelDescriptor(name="m", data_type="t0", version=2, inline_bytes=b"x" * 60)
    known = pb.ModelDescriptor(name="m", data_type="t2", version=2, location="http://x/")
    assert over_capacity(accepted, known, max_data_types=3, max_inline_bytes=100) is None
    new_type = pb.ModelDescriptor(name="m", data_type="t9", version=1, location="http://x/")
    assert "already serves 3 data types" in over_capacity(accepted, new_type, 3, 100)
    assert over_capacity(accepted, inline, 3, 100) is None
    accepted["t1"] = pb.ModelDescriptor(name="m", data_type="t1", version=1, inline_bytes=b"y" * 50)
    assert "over --max-inline-total-bytes 100" in over_capacity(accepted, inline, 3, 100)
    accepted["t0"] = inline  # replacing its own inline bytes does not count them twice
    assert over_capacity(accepted, inline, 3, 110) is None


def test_descriptors_are_checked_when_parsed():
    with pytest.raises(DescriptorError, match="not a ModelDescriptor"):
        parse_descriptor(b"\xff\xff\xff\xff")
    with pytest.raises(DescriptorError, match="name is empty.*version is 0.*neither inline_bytes nor location"):
        parse_descriptor(pb.ModelDescriptor(data_type="d", model_type=pb.PMML).SerializeToString())
    with pytest.raises(DescriptorError, match="model_type 7 has no backend"):
        parse_descriptor(pb.ModelDescriptor(name="m", data_type="d", version=1, model_type=7,
                                            location="http://x/").SerializeToString())


class FakeModel:
    def __init__(self):
        self.released = False

    def release(self):
        self.released = True


def wait_collect(manager: ModelManager, timeout_s: float = 5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = manager.collect()
        if done:
            return done
        time.sleep(0.01)
    raise AssertionError("no load finished")


def test_manager_loads_in_the_background_and_exposes_only_finished_models():
    gate = threading.Event()

    def load(d):
        gate.wait(5)
        return Servable(d.name, d.version, d.model_type, FakeModel())

    manager = ModelManager(load, capacity=2)
    try:
        d = desc(1)
        assert manager.get(d).state == LOADING
        assert manager.collect() == [] and manager.get(d).state == LOADING  # not before it finished
        gate.set()
        [(done, status)] = wait_collect(manager)
        assert done is d and status.state == READY
        assert manager.get(d).servable.version == 1
    finally:
        manager.close()


def test_manager_reports_failures_and_does_not_retry_at_once():
    calls = []

    def load(d):
        calls.append(d.version)
        raise ModelLoadError("corrupt artifact")

    manager = ModelManager(load, retry_after_s=60)
    try:
        manager.request(desc(3))
        [(_, status)] = wait_collect(manager)
        assert status.state == ERROR and "corrupt artifact" in status.error
        assert manager.get(desc(3)).state == ERROR
        manager.request(desc(3))
        assert calls == [3]
    finally:
        manager.close()


def test_a_current_model_loads_ahead_of_a_stuck_upgrade():
    """After a restore a data type's current model must not queue behind a next model whose
    store hangs: serving waits on the current one only."""
    store_hangs = threading.Event()

    def load(d):
        if d.version == 2:
            store_hangs.wait(10)
        return Servable(d.name, d.version, d.model_type, FakeModel())

    manager = ModelManager(load)
    try:
        manager.request(desc(2))  # the next model: its fetch hangs
        assert manager.get(desc(1), urgent=True).state == LOADING
        [(done, status)] = wait_collect(manager)
        assert done.version == 1 and status.state == READY
        assert manager.get(desc(2)).state == LOADING
    finally:
        store_hangs.set()
        manager.close()


def test_manager_survives_unexpected_exceptions_from_a_backend():
    manager = ModelManager(lambda d: 1 / 0)
    try:
        manager.request(desc(1))
        [(_, status)] = wait_collect(manager)
        assert status.state == ERROR and "ZeroDivisionError" in status.error
    finally:
        manager.close()


def test_manager_cache_is_a_bounded_lru_that_releases_what_it_drops():
    manager = ModelManager(lambda d: Servable(d.name, d.version, d.model_type, FakeModel()), capacity=2)
    try:
        servables = {}
        for v in (1, 2):
            manager.request(desc(v))
            wait_collect(manager)
            servables[v] = manager.get(desc(v)).servable
        manager.get(desc(1))  # 1 is now the most recently used
        manager.request(desc(3))
        wait_collect(manager)
        assert sorted(manager.ready_keys()) == [("m", 1), ("m", 3)]
        assert servables[2].model.released and not servables[1].model.released
    finally:
        manager.close()


def test_stats_keep_the_flip23_counters():
    stats = ModelStats("m", 1)
    stats.record_batch(10, 1, 4.0)
    stats.record_batch(5, 0, 2.0)
    m = stats.as_map()
    assert (m["usage"], m["failed"], m["batches"]) == (14, 1, 2)
    assert (m["min_ms"], m["max_ms"], m["mean_ms"], m["total_ms"]) == (2.0, 4.0, 3.0, 6.0)


def test_operator_totals_count_records_batches_and_loads():
    totals = OperatorTotals()
    totals.record_batch(10, 1, 0.004)
    totals.record_batch(3, 3, 0.001)
    totals.record_load(250.7)
    assert (totals.num_inferences, totals.failed_inferences, totals.inference_batches) == (9, 4, 2)
    assert (totals.failed_batches_counter, totals.inference_micros_total) == (1, 5000)
    assert (totals.model_loads, totals.model_load_millis_total) == (1, 250)


def test_status_folds_events_into_the_active_model_per_data_type():
    E = pb.ModelEvent
    events = [
        E(data_type="wine", model_name="w", model_version=1, state=E.AVAILABLE, time_ms=1),
        E(data_type="wine", model_name="w", model_version=1, state=E.STATS, time_ms=2, stats={"usage": 10}),
        E(data_type="wine", model_name="w", model_version=2, state=E.ERROR, time_ms=3, reason="bad"),
        E(data_type="text", model_name="t", model_version=4, state=E.AVAILABLE, time_ms=4),
    ]
    status = fold(events)
    assert (status["wine"].model, status["wine"].version, status["wine"].stats["usage"]) == ("w", 1, 10)
    assert "ERROR w v2: bad" in status["wine"].last_problem
    assert status["text"].version == 4 and status["text"].since_ms == 4


def test_an_output_that_cannot_be_encoded_becomes_a_dead_letter_reason():
    from scoring.batch import Outcome
    from scoring.messages import result_or_failure

    record = pb.DataRecord(record_id="r1", data_type="d")
    servable = Servable("m", 3, pb.PMML, FakeModel())
    message, failure = result_or_failure(record, Outcome(outputs={"y": 1.5}), servable)
    assert failure is None and pb.ScoringResult.FromString(message).model_version == 3
    message, failure = result_or_failure(record, Outcome(outputs={"y": {"nested": 1}}), servable)
    assert message is None and failure[0] == "score" and "cannot be written" in failure[1]


# ---- one data type's models: scoring.lifecycle -------------------------------------------------
def ready(d: pb.ModelDescriptor) -> LoadStatus:
    return LoadStatus(READY, Servable(d.name, d.version, d.model_type, FakeModel()))


def failed(error: str) -> LoadStatus:
    return LoadStatus(ERROR, error=error)


def test_a_first_model_is_taken_up_ahead_of_upgrades_and_swapped_in_once_ready():
    km = KeyModels()
    assert take_up(km, None) is None and settle(km, LoadStatus(LOADING), 0) is None
    assert take_up(km, desc(1)) == TakenUp(desc(1), urgent=True) and km.next == desc(1)
    assert take_up(km, desc(1)) is None  # already the next one
    assert settle(km, LoadStatus(LOADING), 0) is None and km.current is None
    swapped = settle(km, ready(desc(1)), 0)
    assert (swapped.old, swapped.new, swapped.unloads_old) == (None, desc(1), False)
    assert (km.current, km.next) == (desc(1), None)
    assert take_up(km, desc(1)) is None  # already the current one


def test_an_upgrade_loads_while_the_current_model_serves_and_then_replaces_it():
    km = KeyModels(current=desc(1))
    assert take_up(km, desc(2)) == TakenUp(desc(2), urgent=False)
    assert settle(km, LoadStatus(LOADING), 0) is None and km.current == desc(1)
    swapped = settle(km, ready(desc(2)), 0)
    assert (swapped.old, swapped.new, swapped.unloads_old) == (desc(1), desc(2), True)
    assert (km.current, km.next, km.failed_id) == (desc(2), None, "")


def test_a_failed_upgrade_is_given_up_until_another_descriptor_is_accepted():
    km = KeyModels(current=desc(1))
    take_up(km, desc(2))
    assert settle(km, failed("fetch failed: HTTP 500"), 0) == GaveUp(desc(2), "fetch failed: HTTP 500")
    assert (km.current, km.next) == (desc(1), None) and km.failed_id
    assert take_up(km, desc(2)) is None  # the same announcement: not loaded again
    assert take_up(km, desc(3)).descriptor == desc(3)


def test_a_data_type_with_no_other_model_keeps_its_failed_model_for_the_retry_and_says_why():
    km = KeyModels()
    take_up(km, desc(1))
    assert settle(km, failed("fetch failed: boom"), 0) is None and km.next == desc(1)
    assert unservable_reason(km, failed("fetch failed: boom"), 30) == (
        "its only model, m v1, failed to load (fetch failed: boom); the load is retried every 30s")
    assert unservable_reason(km, LoadStatus(LOADING), 30) == ""
    assert unservable_reason(KeyModels(), None, 30) == "no model has been published for this data type"
    assert unservable_reason(KeyModels(current=desc(1)), None, 30) == ""


def test_a_rollback_is_a_new_announcement_even_of_a_version_seen_before():
    km = KeyModels(current=desc(2, t=1))
    back = desc(1, action=ROLLBACK, t=5)
    assert take_up(km, back) == TakenUp(back, urgent=False)
    assert settle(km, ready(back), 0).unloads_old  # v2 is unloaded
    same = desc(1, action=ROLLBACK, t=9)  # the serving version, announced again
    assert take_up(km, same) is not None
    assert not settle(km, ready(same), 0).unloads_old  # v1 replaces v1: nothing to unload


def test_a_record_after_a_quiet_spell_longer_than_the_batch_wait_is_scored_at_once():
    now = 1_000.0
    assert scores_at_once(held=0, last_record_s=now - 0.2, now_s=now, batch_wait_s=0.1)
    assert not scores_at_once(held=0, last_record_s=now - 0.05, now_s=now, batch_wait_s=0.1)
    assert not scores_at_once(held=3, last_record_s=now - 5, now_s=now, batch_wait_s=0.1)  # a batch fills
