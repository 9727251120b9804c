"""Fixtures that start real servers for the tests and always stop them.

The Kafka broker runs on a free port with a fresh data folder per test session; the
Flink standalone cluster is the project's own (flink-conf/), started on demand.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract import scoring_pb2 as pb
from infra import flink_cluster, paths
from infra.job_harness import RunningJob, ScoringSetup
from infra.kafka_broker import KafkaBroker, free_ports
from infra.procs import stop_marked
from jobs.jars import kafka_connector_jar
from model_store.repository import ModelRepository
from model_store.server import ModelStoreServer

# Every process the tests start inherits this mark (brokers, jobs, clusters, their JVMs and
# Python workers); whatever still carries it when the session ends outlived its test.
SESSION_MARK = "SCORING_TEST_SESSION"
os.environ[SESSION_MARK] = uuid.uuid4().hex


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# `kill` (SIGTERM) ends the run as Ctrl-C does, so the fixtures stop their brokers and clusters
# and pytest_sessionfinish still sweeps the marked processes (a plain SIGTERM left them running).
signal.signal(signal.SIGTERM, _interrupted)


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if a process the tests started outlives them (and stop it)."""
    left = stop_marked(SESSION_MARK, os.environ[SESSION_MARK], grace_s=20)
    if left:
        lines = "\n  ".join(left)
        print(f"\nERROR: {len(left)} process(es) started by the tests outlived them (killed now):\n  {lines}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def kafka(tmp_path_factory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(data_dir=tmp_path_factory.mktemp("kafka"), port=free_ports()[0])
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def standalone_cluster() -> Iterator[None]:
    started = flink_cluster.start()
    try:
        yield
    finally:
        if started:
            flink_cluster.stop()


def run_job(module: str, args: list[str], timeout_s: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m <module> <args>` (a job on a local MiniCluster) to completion.

    The job runs in its own process group, killed whole if it overruns."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=paths.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{module} did not finish in {timeout_s}s:\n{out[-5000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)


@pytest.fixture
def job_runner():
    return run_job


def connector_jar() -> Path:
    return kafka_connector_jar()


@pytest.fixture(scope="session")
def samples() -> dict[str, Path]:
    """The sample models and their expected predictions (built once, cached in .run/)."""
    from samples.build import build_all

    return build_all(paths.RUN / "samples")


def load_samples(folder: Path) -> dict:
    import json

    return json.loads((folder / "samples.json").read_text())


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A model store of the module's own: the repository and its HTTP server."""
    repo = ModelRepository(tmp_path_factory.mktemp("store"))
    repo.root.mkdir(parents=True, exist_ok=True)
    with ModelStoreServer(repo.root) as server:
        yield repo, server


@pytest.fixture(scope="module")
def scoring(kafka, store, tmp_path_factory):
    """One running job shared by the tests of a module; each test has its data types."""
    repo, server = store
    setup = ScoringSetup(kafka.bootstrap_servers, repo, server.base_url, tmp_path_factory.mktemp("job"))
    # Records of a data type nobody published wait 5 s for a descriptor (60 s by default).
    with RunningJob(setup.job_args(hold_unpublished_ms=5000), setup.workdir / "job.log") as job:
        setup.job = job
        yield setup
        job.assert_running()


def results_for(setup: ScoringSetup, data_type: str) -> list[pb.ScoringResult]:
    return [r for r in setup.scores(timeout_s=3) if r.data_type == data_type]


def results_including(setup: ScoringSetup, data_type: str, ids, timeout_s: float = 60) -> list[pb.ScoringResult]:
    """The data type's results once every id in `ids` has one (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    results = results_for(setup, data_type)
    while not {r.record_id for r in results} >= set(ids) and time.monotonic() < deadline:
        results = results_for(setup, data_type)
    return results
