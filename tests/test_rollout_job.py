"""Rollouts end to end: the real job on a MiniCluster, a real broker, the model-store CLI as a
user types it. Shadow promote and abandon, a sticky canary promoted by a person, an abort,
an automatic rollback, and a shadow that survives a kill -9."""

from __future__ import annotations

import collections
import time

import pytest

from contract import scoring_pb2 as pb
from infra.job_harness import (
    RunningJob,
    ScoringSetup,
    describe,
    latest_checkpoint,
    nudge_until_event,
)
from model_store.kafka_io import consume
from tests.conftest import load_samples, results_for, results_including

pytestmark = pytest.mark.integration

Event = pb.ModelEvent


def serving_v1(setup: ScoringSetup, samples, name: str, data_type: str,
               sample: str = "wine-pmml") -> tuple[list[dict], list[str]]:
    """Publishes v1 of `sample` for the data type and waits until it serves; returns its rows
    and the ids of the records sent meanwhile."""
    rows = load_samples(samples[sample])["inputs"]
    kind, artifact = ("pmml", "model.pmml") if sample.endswith("pmml") else ("tensorflow", "saved_model")
    setup.publish(name, data_type, kind, samples[sample] / artifact)
    _, sent = nudge_until_event(setup, Event.AVAILABLE, data_type, 1, rows, f"{data_type}-v1")
    return rows, sent


def assert_each_scored_once(setup: ScoringSetup, data_type: str, sent: int) -> list[pb.ScoringResult]:
    deadline = time.monotonic() + 90
    results = results_for(setup, data_type)
    while len(results) < sent and time.monotonic() < deadline:
        results = results_for(setup, data_type)
    ids = [r.record_id for r in results]
    assert len(ids) == len(set(ids)) == sent, f"{len(ids)} results, {len(set(ids))} distinct, {sent} sent"
    return results


def test_a_shadow_that_agrees_is_promoted_and_only_the_current_model_served_meanwhile(scoring, samples):
    rows, _ = serving_v1(scoring, samples, "sh-ok", "sh-ok")
    scoring.publish("sh-ok", "sh-ok", "pmml", samples["wine-pmml"] / "model.pmml",
                    flags=["--shadow", "--min-records", "200", "--tolerance", "1e-9", "--send-pairs"])
    promoted, _ = nudge_until_event(scoring, Event.PROMOTED, "sh-ok", 2, rows, "sh-ok", per_round=40)
    assert promoted.reason.startswith(f"{int(promoted.stats['records']):,} records; agreement on")
    assert promoted.stats["compared"] >= 200 and promoted.stats["error_rate"] == 0
    assert all(v == 1.0 for k, v in promoted.stats.items() if k.startswith("agreement."))
    started = scoring.wait_for_event(Event.ROLLOUT_STARTED, "sh-ok", 2)
    assert "shadow of 100% of records" in started.reason and "beside sh-ok v1" in started.reason
    scoring.wait_for_event(Event.AVAILABLE, "sh-ok", 2)
    after = scoring.send_records("sh-ok", rows, prefix="sh-ok-after")
    results = results_including(scoring, "sh-ok", after)
    versions = [r.model_version for r in results]
    assert versions == sorted(versions), "a v1 result after a v2 one"  # one partition: in order
    assert {r.model_version for r in results if r.record_id in after} == {2}
    pairs = [pb.ShadowPair.FromString(v) for v in consume(scoring.bootstrap, scoring.topics["pairs"], timeout_s=3)]
    mine = [p for p in pairs if p.data_type == "sh-ok"]
    assert len(mine) == promoted.stats["records"]
    assert all((p.current_version, p.candidate_version, list(p.disagreeing)) == (1, 2, []) for p in mine)
    assert all(p.current_outputs == p.candidate_outputs and not p.served_by_candidate for p in mine)


def test_a_shadow_that_predicts_differently_is_abandoned_with_its_numbers(scoring, samples):
    rows, before = serving_v1(scoring, samples, "sh-bad", "sh-bad")
    scoring.publish("sh-bad", "sh-bad", "pmml", samples["wine-pmml-shallow"] / "model.pmml",
                    flags=["--shadow", "--min-records", "200", "--min-agreement", "0.95", "--tolerance", "0.05"])
    abandoned, sent = nudge_until_event(scoring, Event.ABANDONED, "sh-bad", 2, rows, "sh-bad", per_round=40)
    assert "agreement on 'probability_0' 0.000 < 0.95" in abandoned.reason
    assert "agreement on 'predicted_cultivar'" not in abandoned.reason  # the classes agree: not a failure
    assert abandoned.reason.endswith("records; sh-bad v1 serves on")
    assert abandoned.stats["agreement.predicted_cultivar"] == 1.0
    results = assert_each_scored_once(scoring, "sh-bad", len(before) + len(sent))
    assert {r.model_version for r in results} == {1}
    assert scoring.find_event(Event.AVAILABLE, "sh-bad", 2) is None


def test_a_canary_serves_a_sticky_share_of_entities_until_a_person_promotes_it(scoring, samples):
    rows, _ = serving_v1(scoring, samples, "canary", "canary")
    scoring.publish("canary", "canary", "pmml", samples["wine-pmml"] / "model.pmml",
                    flags=["--canary", "20", "--entity-field", "customer", "--min-records", "100",
                             "--manual-promotion"])
    nudge_until_event(scoring, Event.ROLLOUT_STARTED, "canary", 2, rows, "canary-wait")
    entities = [f"customer-{i}" for i in range(2_000)]
    measured = [dict(rows[i % len(rows)], customer=entities[i % len(entities)]) for i in range(10_000)]
    ids = set(scoring.send_records("canary", measured, prefix="canary-measured"))
    results = results_including(scoring, "canary", ids, timeout_s=120)
    by_id = {r.record_id: r.model_version for r in results if r.record_id in ids}
    assert len(by_id) == len(ids)
    versions_of = collections.defaultdict(set)
    for i in range(len(measured)):
        versions_of[entities[i % len(entities)]].add(by_id[f"canary-measured-{i}"])
    assert all(len(v) == 1 for v in versions_of.values()), "an entity saw both versions"
    share = sum(1 for v in by_id.values() if v == 2) / len(by_id)
    assert 0.17 <= share <= 0.23, share
    passed = scoring.wait_for_event(Event.GATE_PASSED, "canary", 2)
    assert "model-store promote --name canary --version 2" in passed.reason
    assert scoring.find_event(Event.PROMOTED, "canary", 2) is None  # it waits for a person
    scoring.model_command("promote", "canary", 2)
    promoted, _ = nudge_until_event(scoring, Event.PROMOTED, "canary", 2, rows, "canary-promote")
    assert promoted.reason.startswith("promoted by a person (PROMOTE)")
    after = set(scoring.send_records("canary", measured[:200], prefix="canary-after"))
    results = results_including(scoring, "canary", after)
    assert {r.model_version for r in results if r.record_id in after} == {2}


def test_an_aborted_shadow_ends_with_the_current_model_serving(scoring, samples):
    rows, _ = serving_v1(scoring, samples, "aborted", "aborted")
    scoring.publish("aborted", "aborted", "pmml", samples["wine-pmml"] / "model.pmml",
                    flags=["--shadow", "--min-records", "1000000"])
    nudge_until_event(scoring, Event.ROLLOUT_STARTED, "aborted", 2, rows, "aborted-wait")
    scoring.model_command("abort", "aborted", 2)
    abandoned, _ = nudge_until_event(scoring, Event.ABANDONED, "aborted", 2, rows, "aborted")
    assert abandoned.reason == "superseded by aborted v1 (ROLLBACK) before its rollout ended"
    after = set(scoring.send_records("aborted", rows, prefix="aborted-after"))
    results = results_including(scoring, "aborted", after)
    assert {r.model_version for r in results if r.record_id in after} == {1}


def test_a_promoted_model_that_starts_failing_is_rolled_back_by_the_job(scoring, samples):
    rows, _ = serving_v1(scoring, samples, "watched", "watched", sample="wine-tf")
    scoring.publish("watched", "watched", "tensorflow", samples["wine-tf-fragile"] / "saved_model",
                    flags=["--shadow", "--min-records", "100", "--tolerance", "1e-5",
                             "--max-error-rate", "0.05", "--watch-s", "300"])
    nudge_until_event(scoring, Event.PROMOTED, "watched", 2, rows, "watched-shadow", per_round=40)
    breaking = [dict(r, magnesium=160.0) for r in rows]  # v2 returns NaN for these; v1 does not
    rolled_back, sent = nudge_until_event(scoring, Event.ROLLED_BACK, "watched", 2, breaking, "watched-breaking",
                                          per_round=40)
    assert "within its watch window; watched v1 serves again once loaded" in rolled_back.reason
    assert "publish a ROLLBACK to v1" in rolled_back.reason
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not [
            e for e in scoring.events(timeout_s=1) if e.state == Event.AVAILABLE
            and (e.data_type, e.model_version, e.reason) == ("watched", 1, "replaces watched v2")]:
        scoring.send_records("watched", rows[:5], prefix=f"watched-back-{time.monotonic()}")
    assert time.monotonic() < deadline, "v1 did not come back"
    letters = [d for d in scoring.dead_letters(timeout_s=3) if d.data_type == "watched"]
    assert letters and all("non-finite" in d.reason and d.model_version == 2 for d in letters)
    after = set(scoring.send_records("watched", breaking, prefix="watched-after"))
    results = results_including(scoring, "watched", after)
    assert {r.model_version for r in results if r.record_id in after} == {1}


def test_a_shadow_continues_after_a_kill_minus_9_without_losing_or_recounting(kafka, store, samples, tmp_path):
    repo, server = store
    setup = ScoringSetup(kafka.bootstrap_servers, repo, server.base_url, tmp_path)
    rows = load_samples(samples["wine-pmml"])["inputs"]
    batch = [rows[i % len(rows)] for i in range(800)]
    with RunningJob(setup.job_args(), tmp_path / "first.log") as job:
        rows, _ = serving_v1(setup, samples, "restart-shadow", "restart-shadow")
        setup.publish("restart-shadow", "restart-shadow", "pmml", samples["wine-pmml"] / "model.pmml",
                      flags=["--shadow", "--min-records", "1000", "--tolerance", "1e-9"])
        nudge_until_event(setup, Event.ROLLOUT_STARTED, "restart-shadow", 2, rows, "restart-wait")
        setup.send_records("restart-shadow", batch, prefix="restart-before")
        deadline = time.monotonic() + 90
        while not [e for e in setup.events(timeout_s=2) if e.state == Event.SHADOW_STATS
                   and e.stats["records"] >= 800]:
            assert time.monotonic() < deadline, [describe(e) for e in setup.events()]
        time.sleep(3)  # a checkpoint after them
        job.kill()
    checkpoint = latest_checkpoint(tmp_path / "checkpoints")
    with RunningJob(setup.job_args(restore_from=checkpoint.as_uri()), tmp_path / "second.log") as job:
        setup.send_records("restart-shadow", batch[:300], prefix="restart-after")
        promoted = setup.wait_for_event(Event.PROMOTED, "restart-shadow", 2, timeout_s=120)
        job.assert_running()
    shadowed = [e for e in setup.events() if e.state == Event.ROLLOUT_STARTED]
    assert len(shadowed) == 1, [describe(e) for e in shadowed]  # continued, not started again
    assert promoted.stats["records"] >= 1_000  # 300 after the restart could not have passed it alone
    results = [r for r in setup.scores(timeout_s=5) if r.record_id.startswith("restart-")]
    ids = [r.record_id for r in results]
    assert len(ids) == len(set(ids)), "scored twice across the restart"
    assert {i for i in ids if i.startswith(("restart-before", "restart-after"))} == {
        f"restart-before-{i}" for i in range(800)} | {f"restart-after-{i}" for i in range(300)}
