"""The scoring job with --execution-mode thread: its Python embedded in the TaskManager's JVM
(PEMJA), on a real MiniCluster and on the standalone cluster through `flink run`.

What thread mode must still do: score in batches that timers flush (their outputs reach the
right topics), dead-letter bad records, swap and roll back models, and refuse PMML models with
the reason, without taking the TaskManager down. The restore from a checkpoint in thread mode
is in tests/test_scoring_job.py (the restart test runs in both modes)."""

from __future__ import annotations

import pytest

from contract import scoring_pb2 as pb
from infra import flink_cluster
from infra.job_harness import RunningJob, ScoringSetup, nudge_until_event
from infra.procs import wait_until
from model_store.kafka_io import consume
from tests.conftest import load_samples, results_including
from tests.test_scoring_job import assert_outputs_as_expected, runs

pytestmark = pytest.mark.integration

Event = pb.ModelEvent


@pytest.fixture(scope="module")
def threaded(kafka, store, tmp_path_factory):
    """A thread-mode job; records of a data type whose only model cannot load are dead-lettered."""
    repo, server = store
    setup = ScoringSetup(kafka.bootstrap_servers, repo, server.base_url, tmp_path_factory.mktemp("thread-job"))
    with RunningJob(setup.job_args(execution_mode="thread", no_model_policy="dead-letter"),
                    setup.workdir / "job.log") as job:
        setup.job = job
        yield setup
        job.assert_running()


def test_batches_flushed_by_timers_swaps_and_dead_letters_in_thread_mode(threaded, samples):
    doc = load_samples(samples["wine-tf"])
    threaded.publish("t-wine", "t-wine", "tensorflow", samples["wine-tf"] / "saved_model")
    threaded.wait_for_event(Event.ACCEPTED, "t-wine", 1)  # else its records would find no model
    first = threaded.send_records("t-wine", doc["inputs"], prefix="t-first")
    bad = threaded.send_records("t-wine", [{**doc["inputs"][0], "alcohol": "strong"}], prefix="t-bad")
    results = results_including(threaded, "t-wine", first, timeout_s=180)
    assert_outputs_as_expected(results, dict(zip(first, doc["expected"], strict=True)))
    letters = {d.record_id: d for d in threaded.dead_letters(timeout_s=10)}
    assert "'alcohol' is a string" in letters[bad[0]].reason

    # v2 is the ONNX wine model; then back to v1. Each record once, by one version at a time.
    # A key swaps as its records (or timers) pass: records are sent until each swap is reported.
    threaded.publish("t-wine", "t-wine", "onnx", samples["wine-onnx"] / "model.onnx")
    _, nudged = nudge_until_event(threaded, Event.AVAILABLE, "t-wine", 2, doc["inputs"], "t-to-v2")
    second = threaded.send_records("t-wine", doc["inputs"], prefix="t-second")
    threaded.rollback("t-wine", 1)
    wait_until(lambda: nudged.extend(threaded.send_records("t-wine", doc["inputs"][:3], prefix=f"t-to-v1-{len(nudged)}"))
               or len(events_of(threaded, Event.AVAILABLE, "t-wine", 1)) == 2, 120, "v1 AVAILABLE again")
    third = threaded.send_records("t-wine", doc["inputs"], prefix="t-third")
    results = results_including(threaded, "t-wine", first + nudged + second + third, timeout_s=120)
    ids = [r.record_id for r in results]
    assert len(ids) == len(set(ids)), "a record was scored twice"
    assert set(ids) == set(first + nudged + second + third)
    assert runs([r.model_version for r in results]) == [1, 2, 1]
    assert_outputs_as_expected(results, dict(zip(third, doc["expected"], strict=True)))
    assert all(r.model_version == 2 for r in results if r.record_id in second)


def test_a_pmml_model_is_refused_with_the_reason_and_its_records_dead_lettered(threaded, samples):
    rows = load_samples(samples["wine-pmml"])["inputs"]
    threaded.publish("t-alive", "t-alive", "onnx", samples["wine-onnx"] / "model.onnx")
    threaded.publish("t-pmml", "t-pmml", "pmml", samples["wine-pmml"] / "model.pmml")
    threaded.wait_for_event(Event.ACCEPTED, "t-alive", 1)
    # The load fails in the background; the operator reports it as records of any type pass.
    alive = []
    wait_until(lambda: alive.extend(threaded.send_records("t-alive", rows[:2], prefix=f"t-alive-{len(alive)}"))
               or events_of(threaded, Event.ERROR, "t-pmml", 1), 120, "the PMML model's ERROR")
    error = events_of(threaded, Event.ERROR, "t-pmml", 1)[0]
    assert "--execution-mode thread" in error.reason and "process mode" in error.reason
    ids = threaded.send_records("t-pmml", rows[:5], prefix="t-pmml")
    letters = {d.record_id: d for d in threaded.dead_letters(timeout_s=20) if d.record_id.startswith("t-pmml")}
    assert set(letters) == set(ids)
    assert all(d.stage == "no-model" and "failed to load" in d.reason for d in letters.values())
    # The TaskManager is still there, and scored the other data type all along.
    results = results_including(threaded, "t-alive", alive, timeout_s=60)
    assert {r.record_id for r in results} >= set(alive)


def events_of(setup: ScoringSetup, state: int, data_type: str, version: int) -> list[pb.ModelEvent]:
    return [e for e in setup.events(timeout_s=1)
            if (e.state, e.data_type, e.model_version) == (state, data_type, version)]


@pytest.mark.cluster
def test_flink_run_in_thread_mode_on_the_standalone_cluster(kafka, store, samples, tmp_path, standalone_cluster):
    """The job sets the embedded interpreter's path itself: nothing in the cluster's config."""
    repo, server = store
    setup = ScoringSetup(kafka.bootstrap_servers, repo, server.base_url, tmp_path)
    args = setup.job_args(execution_mode="thread", job_name="scoring-thread-" + setup.topics["data"])
    args = [a for a in args if not a.startswith("file:") and a != "--checkpoint-dir"]
    job_id = flink_cluster.submit_scoring_job(args)
    try:
        doc = load_samples(samples["wine-onnx"])
        setup.publish("cluster-onnx", "cluster-onnx", "onnx", samples["wine-onnx"] / "model.onnx")
        ids = setup.send_records("cluster-onnx", doc["inputs"], prefix="c")
        results = [pb.ScoringResult.FromString(v)
                   for v in consume(setup.bootstrap, setup.topics["scores"], len(ids), timeout_s=180)]
        assert sorted(r.record_id for r in results) == sorted(ids)
        assert_outputs_as_expected(results, dict(zip(ids, doc["expected"], strict=True)))
        # Its metrics are Flink counters, read through REST (the path that once crashed a
        # TaskManager when they were Python gauges): exact, and the TaskManager still there.
        vertex = next(v["id"] for v in flink_cluster.rest(f"/jobs/{job_id}")["vertices"]
                      if v["name"].startswith("score"))
        query = f"/jobs/{job_id}/vertices/{vertex}/subtasks/0/metrics?get=score.scoring.num_inferences"
        wait_until(lambda: [m["value"] for m in flink_cluster.rest(query)] == [str(len(ids))], 60,
                   f"scoring.num_inferences == {len(ids)} through REST")
        assert flink_cluster.rest(f"/jobs/{job_id}")["state"] == "RUNNING"
    finally:
        flink_cluster.cancel_job(job_id)
