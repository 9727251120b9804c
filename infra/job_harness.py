"""Running the scoring job for tests and benchmarks: a real MiniCluster in a child process,
real Kafka topics, a real model store over HTTP. Everything started here is stopped here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from contract import scoring_pb2 as pb
from contract.json_records import read_result, record_as_json
from contract.topics import MODELS_TOPIC_CONFIG
from contract.values import make_record
from infra import paths
from infra.procs import stop_marked
from infra.topics import create_job_topics, unique_topics
from model_store import cli
from model_store.kafka_config import KafkaClientConfig
from model_store.kafka_io import consume, produce, produce_keyed
from model_store.repository import ModelRepository

ROLES = ("data", "models", "scores", "dead-letters", "model-events", "pairs")
# Data types whose keys Flink spreads over all 4 subtasks at parallelism 4 (128 key groups):
# the at-scale test, faults and bench send these, so every subtask owns some.
SCALE_DATA_TYPES = [f"scale-{k}" for k in range(16)]


@dataclass
class ScoringSetup:
    bootstrap: str
    repo: ModelRepository
    store_url: str
    workdir: Path
    topics: dict[str, str] = field(default_factory=lambda: unique_topics(*ROLES))
    models_topic_config: Mapping[str, str] = field(default_factory=lambda: MODELS_TOPIC_CONFIG)
    # A client properties file for the tests' own clients, the CLI and (by default) the job.
    kafka_config: Path | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kafka = KafkaClientConfig.load(self.bootstrap, self.kafka_config)
        create_job_topics(self.kafka, self.topics, partitions=1, models_config=self.models_topic_config)

    def cli(self, *args: str) -> int:
        """`model-store` with this setup's store and Kafka settings."""
        kafka = ["--kafka-config", str(self.kafka_config)] if self.kafka_config else []
        return cli.main(["--store-root", str(self.repo.root), "--bootstrap-servers", self.bootstrap, *kafka, *args])

    @property
    def group_id(self) -> str:
        """The job's consumer group, and the prefix of its transactional ids."""
        return "test-" + self.topics["data"]

    def job_args(self, **overrides) -> list[str]:
        args = {
            "bootstrap-servers": self.bootstrap,
            "data-topic": self.topics["data"],
            "models-topic": self.topics["models"],
            "scores-topic": self.topics["scores"],
            "dead-letters-topic": self.topics["dead-letters"],
            "model-events-topic": self.topics["model-events"],
            "pairs-topic": self.topics["pairs"],
            "group-id": self.group_id,
            "store-allow-list": self.store_url + "/",
            "model-cache-dir": str(self.workdir / "model-cache"),
            "checkpoint-interval-ms": "1000",
            "checkpoint-dir": (self.workdir / "checkpoints").as_uri(),
            "batch-max-wait-ms": "20",
            "stats-interval-ms": "1000",
            "kafka-config": str(self.kafka_config or ""),
        }
        args.update({k.replace("_", "-"): str(v) for k, v in overrides.items()})
        return [item for k, v in args.items() for item in (f"--{k}", v)]

    def publish(self, name: str, data_type: str, model_type: str, path: Path,
                inline_max_bytes: int = 0, flags: Iterable[str] = ()) -> None:
        """`flags`: more of the CLI's publish flags, e.g. ["--shadow", "--min-records", "200"]."""
        code = self.cli("publish", "--name", name, "--data-type", data_type, "--type", model_type,
                        "--path", str(path), "--topic", self.topics["models"],
                        "--base-url", self.store_url, "--inline-max-bytes", str(inline_max_bytes), *flags)
        assert code == 0

    def model_command(self, command: str, name: str, version: int) -> None:
        """rollback, promote or abort, as a user types them."""
        extra = ["--events-topic", self.topics["model-events"]] if command == "abort" else []
        code = self.cli(command, "--name", name, "--version", str(version), "--topic", self.topics["models"],
                        "--base-url", self.store_url, *extra)
        assert code == 0

    def rollback(self, name: str, version: int) -> None:
        self.model_command("rollback", name, version)

    def announce(self, messages: Iterable[bytes]) -> None:
        """Raw model messages (descriptors, or anything else) onto the models topic, keyed by
        data type as the compacted topic needs; what does not parse under the key `unparsed`."""
        produce_keyed(self.kafka, self.topics["models"], ((model_key(m), m) for m in messages))

    def send_records(self, data_type: str, rows: Iterable[dict], prefix: str, as_json: bool = False) -> list[str]:
        records = [make_record(f"{prefix}-{i}", data_type, row, int(time.time() * 1000))
                   for i, row in enumerate(rows)]
        encode = record_as_json if as_json else pb.DataRecord.SerializeToString
        produce(self.kafka, self.topics["data"], (encode(r) for r in records))
        return [r.record_id for r in records]

    def send_raw(self, values: Iterable[bytes]) -> None:
        produce(self.kafka, self.topics["data"], values)

    def scores(self, expected: int | None = None, timeout_s: float = 90) -> list[pb.ScoringResult]:
        return [read_result(v)
                for v in consume(self.kafka, self.topics["scores"], expected, timeout_s)]

    def dead_letters(self, expected: int | None = None, timeout_s: float = 60) -> list[pb.DeadLetter]:
        return [pb.DeadLetter.FromString(v)
                for v in consume(self.kafka, self.topics["dead-letters"], expected, timeout_s)]

    def events(self, timeout_s: float = 5) -> list[pb.ModelEvent]:
        return [pb.ModelEvent.FromString(v)
                for v in consume(self.kafka, self.topics["model-events"], None, timeout_s)]

    def find_event(self, state: int, data_type: str, version: int, timeout_s: float = 2) -> pb.ModelEvent | None:
        """The first event of this state, data type and version the topic holds now."""
        return next((e for e in self.events(timeout_s)
                     if (e.state, e.data_type, e.model_version) == (state, data_type, version)), None)

    def no_event(self, state: int, data_type: str, version: int, timeout_s: float) -> AssertionError:
        return AssertionError(f"no {pb.ModelEvent.State.Name(state)} event for {data_type} v{version} "
                              f"in {timeout_s:.0f}s; events: {[describe(e) for e in self.events(2)]}")

    def wait_for_event(self, state: int, data_type: str, version: int, timeout_s: float = 90) -> pb.ModelEvent:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.find_event(state, data_type, version)
            if found:
                return found
        raise self.no_event(state, data_type, version, timeout_s)


def nudge_until_event(setup: ScoringSetup, state: int, data_type: str, version: int, rows: list[dict],
                      prefix: str, timeout_s: float = 120, per_round: int = 5) -> tuple[pb.ModelEvent, list[str]]:
    """The operator reports a finished load as records pass it: send a few records (`per_round`,
    cycling through `rows`) a second until the event is there. Returns the event and the ids
    of the records sent."""
    sent: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = [rows[i % len(rows)] for i in range(per_round)]
        sent += setup.send_records(data_type, batch, prefix=f"{prefix}-{len(sent)}")
        found = setup.find_event(state, data_type, version, timeout_s=1)
        if found:
            return found, sent
    raise setup.no_event(state, data_type, version, timeout_s)


def model_key(message: bytes) -> bytes:
    try:
        return pb.ModelDescriptor.FromString(message).data_type.encode() or b"unparsed"
    except DecodeError:
        return b"unparsed"


def describe(e: pb.ModelEvent) -> str:
    numbers = {k: round(v, 3) for k, v in e.stats.items() if k in ("records", "usage", "error_rate")}
    return (f"{pb.ModelEvent.State.Name(e.state)} {e.data_type} {e.model_name} v{e.model_version} "
            f"{e.reason[:120]}{' ' + str(numbers) if numbers else ''}")


class RunningJob:
    """`python -m jobs.scoring_job` (or another job module) on a local MiniCluster, killed on exit: its process group,
    then anything it started elsewhere (marked in its environment)."""

    MARK = "SCORING_MINICLUSTER_JOB"

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None,
                 module: str = "jobs.scoring_job") -> None:
        self.args = args
        self.module = module
        self.log_path = log_path
        self.mark = uuid.uuid4().hex
        self.env = {**(env or os.environ), self.MARK: self.mark}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> RunningJob:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, *self.args],
                                     cwd=paths.ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=self.env)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        stop_marked(self.MARK, self.mark, grace_s=0)

    def __exit__(self, *exc) -> None:
        self.kill()

    def assert_running(self) -> None:
        assert self.proc.poll() is None, f"the job exited:\n{self.log_tail()}"

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(line for line in lines if not line.lstrip().startswith("at "))[-8000:]


def latest_checkpoint(checkpoint_root: Path) -> Path:
    found = sorted(checkpoint_root.rglob("chk-*/_metadata"), key=lambda p: p.stat().st_mtime)
    assert found, f"no completed checkpoint under {checkpoint_root}"
    return found[-1].parent
