"""Records that kill their worker: the crash journal alone, then a job on a MiniCluster whose
model aborts its process on one record."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from contract import scoring_pb2 as pb
from faults.crashing_model import BACKEND, CRASH_ON, CRASHING_TYPE
from infra.job_harness import RunningJob, ScoringSetup
from scoring.poison import CrashJournal
from tests.conftest import results_including
from tests.test_scoring_job import dead_letters_including


def test_a_record_in_flight_when_the_worker_died_twice_is_poisoned_and_one_that_scores_is_forgotten(tmp_path):
    path = tmp_path / "journal" / "job-0.json"
    first = CrashJournal(path)
    first.scoring([b"innocent", b"poison"])  # ...and the process dies here
    second = CrashJournal(path)
    assert (second.crashes_of(b"innocent"), second.crashes_of(b"poison")) == (1, 1)
    assert not second.poisoned(b"poison") and second.crashes_of(b"other") == 0
    second.scoring([b"innocent"])
    second.scored()  # scored alone, fine: forgotten
    second.scoring([b"poison"])  # alone, and the process dies again
    third = CrashJournal(path)
    assert third.crashes_of(b"innocent") == 0 and third.poisoned(b"poison")
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    path.write_bytes(b'{"in_flight": ["ab')  # cut short: starts afresh rather than failing the task
    assert CrashJournal(path).crashes == {}
    assert CrashJournal(None).crashes == {}  # no journal: nothing counted


@pytest.mark.integration
def test_a_record_that_kills_its_worker_is_dead_lettered_after_two_crashes_and_the_job_goes_on(
        kafka, store, tmp_path):
    repo, server = store
    setup = ScoringSetup(kafka.bootstrap_servers, repo, server.base_url, tmp_path / "job")
    artifact = json.dumps({"crash_on": CRASH_ON}).encode()
    d = pb.ModelDescriptor(name="crashing", version=1, data_type="crashing", model_type=CRASHING_TYPE,
                           inline_bytes=artifact, sha256=hashlib.sha256(artifact).hexdigest())
    # On a MiniCluster PyFlink runs the Python operators inside the job's own process (its
    # "loopback" mode), where an abort ends everything: "process" starts Python workers apart,
    # as every TaskManager of a cluster does.
    env = {**os.environ, "SCORING_EXTRA_BACKENDS": BACKEND, "_python_worker_execution_mode": "process"}
    with RunningJob(setup.job_args(batch_max_wait_ms=200), tmp_path / "job.log", env=env) as job:
        setup.announce([d.SerializeToString()])  # records sent before it loads are held for it
        before = setup.send_records("crashing", [{"x": float(i)} for i in range(20)], prefix="before")
        poison = setup.send_records("crashing", [{"x": CRASH_ON}], prefix="poison")
        after = setup.send_records("crashing", [{"x": float(i)} for i in range(20)], prefix="after")
        letters = dead_letters_including(setup, poison, timeout_s=240)
        results = results_including(setup, "crashing", before + after, timeout_s=120)
        job.assert_running()
    assert set(letters) == set(poison)
    assert "the worker process died 2 times while this record was being scored" in letters[poison[0]].reason
    by_id = {r.record_id: r for r in results}
    assert set(by_id) == set(before + after) and len(results) == len(by_id)  # exactly once
    assert by_id["after-3"].outputs["y"].double_value == 6.0
