"""Past one process: the job at parallelism 4 on two TaskManagers (`flink run`, a 4-partition
data topic, 16 data types), every subtask swapping its models, and the TaskManagers'
Prometheus reporters counting what was scored."""

from __future__ import annotations

import time

import pytest

from contract import scoring_pb2 as pb
from infra import flink_cluster
from infra.job_harness import ROLES, SCALE_DATA_TYPES, ScoringSetup, describe
from infra.procs import wait_until
from infra.topics import create_topics, unique_topics
from tests.conftest import load_samples

pytestmark = [pytest.mark.integration, pytest.mark.cluster]
Event = pb.ModelEvent
PARALLELISM = 4


@pytest.fixture(scope="module")
def two_taskmanagers(standalone_cluster):
    """The tests' cluster restarted as two TaskManagers of two slots, reporting to
    Prometheus; back to one TaskManager afterwards, as the other tests expect it."""
    flink_cluster.stop()
    flink_cluster.start(taskmanagers=2, prometheus=True)
    try:
        yield
    finally:
        flink_cluster.stop()
        flink_cluster.start()


def events(setup: ScoringSetup, state: int, version: int) -> list[pb.ModelEvent]:
    return [e for e in setup.events(timeout_s=3) if e.state == state and e.model_version == version]


def send_each(setup: ScoringSetup, rows: list[dict], per_type: int, prefix: str) -> list[str]:
    return [i for dt in SCALE_DATA_TYPES for i in setup.send_records(dt, rows[:per_type], prefix=f"{prefix}-{dt}")]


def swap_everywhere(setup: ScoringSetup, rows: list[dict], model: str, timeout_s: float = 240) -> list[str]:
    """Publish v2 for every data type, then send a record of each a second (a swap happens
    as its data type's records arrive) until every data type reports AVAILABLE v2."""
    for dt in SCALE_DATA_TYPES:
        setup.publish(f"model-{dt}", dt, "pmml", model)
    sent: list[str] = []
    deadline = time.monotonic() + timeout_s
    while not set(SCALE_DATA_TYPES) <= {e.data_type for e in events(setup, Event.AVAILABLE, 2)}:
        assert time.monotonic() < deadline, (
            f"not every data type swapped in {timeout_s}s: "
            f"{sorted(set(SCALE_DATA_TYPES) - {e.data_type for e in events(setup, Event.AVAILABLE, 2)})} "
            f"did not; their v2 events: {[describe(e) for e in setup.events(timeout_s=3) if e.model_version == 2]}")
        sent += send_each(setup, rows, 1, f"nudge-{len(sent)}")
    return sent


def scored_once(setup: ScoringSetup, ids: list[str]) -> dict[str, pb.ScoringResult]:
    """Every one of `ids` has exactly one result (exactly-once across restarts and rescales)."""
    results = setup.scores(len(ids), timeout_s=240)
    found = [r.record_id for r in results]
    assert sorted(found) == sorted(set(found)), "a record was scored twice"
    missing = set(ids) - set(found)
    assert not missing, (f"{len(missing)} records without a result, e.g. {sorted(missing)[:5]}; events: "
                         f"{[describe(e) for e in setup.events(timeout_s=3)][-40:]}; dead letters: "
                         f"{[(d.record_id, d.reason) for d in setup.dead_letters(timeout_s=3)]}")
    return {r.record_id: r for r in results}


def test_rescaled_1_4_2_every_subtask_swaps_nothing_lost_or_twice(kafka, store, samples, tmp_path, two_taskmanagers):
    """At p=1, v1 serves 16 data types and a 17th holds its records (its v1 does not load);
    stop with a savepoint, on at p=4 over two TaskManagers: v1 serves without a republish, the
    held records are scored once a model of theirs loads (v2), and a v2 of every data type swaps
    on every subtask; stop again, on at p=2: v2 serves. Prometheus counts what was scored."""
    repo, server = store
    topics = unique_topics(*ROLES)
    create_topics(kafka.bootstrap_servers, [topics["data"]], partitions=PARALLELISM)
    setup = ScoringSetup(kafka.bootstrap_servers, repo, server.base_url, tmp_path, topics)
    args = setup.job_args(job_name="scoring-scale-" + topics["data"])
    args = [a for a in args if not a.startswith("file:") and a != "--checkpoint-dir"]
    savepoints = (tmp_path / "savepoints").as_uri()
    model = samples["wine-pmml"] / "model.pmml"
    rows = load_samples(samples["wine-pmml"])["inputs"]
    assert flink_cluster.taskmanagers_registered() == 2
    job_id = flink_cluster.submit_scoring_job([*args, "--parallelism", "1"])
    try:
        for dt in SCALE_DATA_TYPES:
            setup.publish(f"model-{dt}", dt, "pmml", model)
        # Records are held only for a data type with a descriptor: this one's model does not load.
        (tmp_path / "broken.pmml").write_text("<PMML>not a model</PMML>")
        setup.publish("model-scale-held", "scale-held", "pmml", tmp_path / "broken.pmml")
        sent = send_each(setup, rows, 10, "p1")
        held = setup.send_records("scale-held", rows[:10], prefix="held")
        scored_once(setup, sent)

        job_id, _ = flink_cluster.rescale(job_id, PARALLELISM, args, savepoints)
        sent += send_each(setup, rows, 10, "p4")
        setup.publish("model-scale-held", "scale-held", "pmml", model)
        nudge = setup.send_records("scale-held", rows[:1], prefix="held-nudge")
        scored = scored_once(setup, sent + held + nudge)
        assert {(scored[i].model_name, scored[i].model_version) for i in held + nudge} == {("model-scale-held", 2)}
        assert {scored[i].model_version for i in sent} == {1}, "v1 serves after the rescale, unpublished"
        sent += nudge
        # The subtask that owns a data type reports its STATS; the last ones are the p=4 job's.
        owners = {e.data_type: e.subtask for e in events(setup, Event.STATS, 1)}
        assert set(owners.values()) == set(range(PARALLELISM)), f"data types per subtask: {owners}"

        sent += swap_everywhere(setup, rows, model)
        after_swap = send_each(setup, rows, 10, "p4-v2")
        sent += after_swap
        scored = scored_once(setup, sent + held)
        assert {scored[i].model_version for i in after_swap} == {2}, "a record after the swaps met v1"
        # Every subtask got every v2 on the broadcast side and loaded it, not only the owners.
        assert {e.subtask for e in events(setup, Event.READY, 2)} == set(range(PARALLELISM))
        assert {e.data_type: e.subtask for e in events(setup, Event.AVAILABLE, 2) if e.data_type in SCALE_DATA_TYPES} == {
            dt: owners[dt] for dt in SCALE_DATA_TYPES}, "a data type swapped on a subtask that does not own it"
        swaps = [e for e in setup.events(timeout_s=3) if e.state == Event.AVAILABLE
                 and (e.model_version == 2 or e.data_type == "scale-held")]  # the p=4 job's
        prometheus_counts(job_id, scored=len(sent) - 160 + len(held), swaps=len(swaps),
                          sent_to_it=len(sent) - 160, held=len(held), descriptors=len(SCALE_DATA_TYPES) + 1)

        job_id, _ = flink_cluster.rescale(job_id, 2, args, savepoints)
        at_2 = send_each(setup, rows, 10, "p2")
        scored = scored_once(setup, sent + held + at_2)
        assert {scored[i].model_version for i in at_2} == {2}
        assert flink_cluster.job_state(job_id) == "RUNNING"
    finally:
        flink_cluster.cancel_job(job_id)


def prometheus_counts(job_id: str, scored: int, swaps: int, sent_to_it: int, held: int, descriptors: int) -> None:
    """Both TaskManagers' reporters serve the job's 4 score subtasks. The job's own `scoring`
    metrics add up to what this job scored (`num_inferences`) and swapped (`model_swaps`, one
    per AVAILABLE event), exactly; Flink's `numRecordsIn` of the operator that reads records
    into batches within known bounds: the held records were read by the job before the
    rescale or by this one. (The score operator's counts batches and descriptors.) Flink's
    metrics count since the job (re)started: they are not part of its state."""
    samples: dict[str, list] = {}
    low, high = sent_to_it, sent_to_it + held

    def total(name: str, operator: str = "score") -> float:
        samples[name] = [s for s in flink_cluster.prometheus_samples(name)
                         if s[1].get("job_id") == job_id and s[0].endswith(name)
                         and s[1].get("operator_name", "").replace("_", " ") == operator]
        return sum(value for _, _, value in samples[name])

    def add_up() -> bool:
        return (total("scoring_num_inferences") == scored and total("scoring_model_swaps") == swaps
                and low <= total("operator_numRecordsIn", "read records into column batches") <= high)

    try:
        wait_until(add_up, 60, f"Prometheus counting {scored} inferences, {swaps} swaps and {low}-{high} "
                   "records into the score operator", interval_s=2)
    except TimeoutError as late:
        raise AssertionError(f"{late} Last scraped: { {k: [s[2] for s in v] for k, v in samples.items()} }") from None
    for found in samples.values():
        assert len({labels["tm_id"] for _, labels, _ in found}) == 2, "not both TaskManagers report"
        assert {int(labels["subtask_index"]) for _, labels, _ in found} == set(range(PARALLELISM))
