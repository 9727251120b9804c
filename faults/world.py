"""The world a faults run disrupts: a Kafka broker of its own, the model store over HTTP
(with faults to inject) and a decoy server that must never be asked for anything, the
Flink standalone cluster, and the scoring job(s) submitted with `flink run`."""

from __future__ import annotations

import json
import os
import time
import urllib.error
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from contract import scoring_pb2 as pb
from contract import signing
from faults import crashing_model
from faults.outputs import JobOutputs, is_event, records
from faults.report import EXACTLY_ONCE
from faults.store import FaultyStore
from faults.stream import RecordStream, Section
from infra import flink_cluster, paths
from infra.job_harness import ROLES, RunningJob, ScoringSetup
from infra.kafka_broker import KafkaBroker, free_ports
from infra.kafka_security import BrokerSecurity, Principal
from infra.procs import wait_until
from infra.topics import create_topics, unique_topics
from model_store import cli
from model_store.kafka_config import KafkaClientConfig
from model_store.repository import ModelRepository, StoredModel
from samples.build import build_all

MAX_RECORD_BYTES = 64 * 1024
MAX_ARTIFACT_BYTES = 2 * 1024 * 1024
RECOVERY_TIMEOUT_S = 300
Event = pb.ModelEvent
GUARDED_JOB, APP = Principal("guarded-scoring-job"), Principal("billing-app")
SCALE_PARALLELISM, SCALE_TASKMANAGERS = 4, 2


@dataclass
class Job:
    delivery: str
    setup: ScoringSetup
    job_id: str
    outputs: JobOutputs
    args: list[str] = field(default_factory=list)  # of `flink run`; none for a MiniCluster job

    @property
    def data_topic(self) -> str:
        return self.setup.topics["data"]


def say(message: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _job_running(job_id: str) -> bool:
    try:
        job = flink_cluster.rest(f"/jobs/{job_id}")
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return job["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in job["vertices"])


class World:
    def __init__(self, workdir: Path, deliveries: tuple[str, ...] = (EXACTLY_ONCE,)) -> None:
        self.workdir = workdir
        self.deliveries = deliveries
        self.retry_after_s = 10.0  # the jobs' --load-retry-s: a failed load is tried again after this
        self.stack = ExitStack()
        self.jobs: list[Job] = []
        self.served: dict[str, int] = {}  # data type -> the version serving it
        self._guarded: Job | None = None
        self._scaled: Job | None = None
        self._owns_cluster = False

    # ---- start and stop ---------------------------------------------------------------------
    def __enter__(self) -> World:
        try:
            self._start()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        say("stopping everything this run started")
        self.stack.close()

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.samples = build_all(paths.RUN / "samples", ["wine-pmml", "wine-tf", "digits-tf"])
        port, internal = free_ports()
        # The run's own tools use the PLAINTEXT listener; the guarded job and the attacks'
        # principals the SASL_SSL one, where ACLs decide.
        security = BrokerSecurity(self.workdir / "kafka-tls", users=(GUARDED_JOB, APP))
        self.broker = KafkaBroker(self.workdir / "kafka", port, security, internal_port=internal)
        say(f"starting Kafka on 127.0.0.1:{internal} (plaintext) and {self.broker.bootstrap_servers} (SASL_SSL)")
        self.broker.start()
        self.stack.callback(self.broker.stop)
        signing.new_key_pair(self.workdir / "keys")
        self.signing_key = signing.load_private_key(self.workdir / "keys" / "private.pem")
        self.repo = ModelRepository(self.workdir / "model-store")
        self.repo.root.mkdir(parents=True, exist_ok=True)
        self.store = FaultyStore(self.repo.root).start()
        self.stack.callback(self.store.stop)
        (self.workdir / "decoy").mkdir(exist_ok=True)
        self.decoy = FaultyStore(self.workdir / "decoy").start()  # "another host"
        self.stack.callback(self.decoy.stop)
        say("starting the Flink standalone cluster (unless it is up)")
        self._owns_cluster = flink_cluster.start()
        self.stack.callback(self._stop_cluster)
        for delivery in self.deliveries:
            self.jobs.append(self._submit(delivery))
        # Every streamed data type is served by a wine model (PMML or TensorFlow, same inputs).
        self.stream = RecordStream(self.bootstrap, [j.data_topic for j in self.jobs],
                                   self.sample_inputs("wine-pmml"))
        self.stack.callback(self.stream.close)

    def _stop_cluster(self) -> None:
        """Stop the cluster if this run started it; one it found running is left running as
        it was found, with one TaskManager, should the at-scale cases have changed it."""
        if self._owns_cluster:
            flink_cluster.stop()
        elif self._scaled is not None:
            flink_cluster.stop()
            flink_cluster.start()

    def _submit(self, delivery: str, setup: ScoringSetup | None = None, **more_args) -> Job:
        setup = setup or ScoringSetup(self.bootstrap, self.repo, self.store.base_url, self.workdir / delivery)
        args = setup.job_args(delivery=delivery, no_model_policy="dead-letter", load_retry_s=self.retry_after_s,
                              max_record_bytes=MAX_RECORD_BYTES, max_artifact_bytes=MAX_ARTIFACT_BYTES,
                              stats_interval_ms=5000, job_name=f"faults {delivery} {setup.topics['data']}",
                              **more_args)
        job = Job(delivery, setup, "", JobOutputs(setup), args)
        self.stack.callback(job.outputs.close)
        self.resubmit(job)
        say(f"submitted the scoring job ({delivery}): {job.job_id}")
        return job

    def resubmit(self, job: Job, *more_args: str) -> None:
        """`flink run` the job (again, e.g. `--restore-from` a checkpoint); it is cancelled at
        the end of the run."""
        job.job_id = flink_cluster.submit_scoring_job([*job.args, *more_args])
        self.stack.callback(self._cancel, job.job_id)

    def scaled_job(self) -> Job:
        """The at-scale cases' job: exactly-once at parallelism 4 on two TaskManagers, its data
        topic of 4 partitions, and a stream of its own. On first use the other jobs are
        cancelled and the cluster restarted with two TaskManagers: these cases run last."""
        if self._scaled is None:
            say(f"at scale: cancelling the other jobs, restarting the cluster with {SCALE_TASKMANAGERS} "
                f"TaskManagers, submitting the exactly-once job at parallelism {SCALE_PARALLELISM}")
            for job in self.jobs:
                self._cancel(job.job_id)
            flink_cluster.stop()
            flink_cluster.start(taskmanagers=SCALE_TASKMANAGERS)
            topics = unique_topics(*ROLES)
            create_topics(self.bootstrap, [topics["data"]], partitions=SCALE_PARALLELISM)
            setup = ScoringSetup(self.bootstrap, self.repo, self.store.base_url, self.workdir / "scaled", topics)
            self._scaled = self._submit(EXACTLY_ONCE, setup, parallelism=SCALE_PARALLELISM)
            self.jobs = [self._scaled]
            self.stream = RecordStream(self.bootstrap, [self._scaled.data_topic], self.sample_inputs("wine-pmml"),
                                       per_tick=1)
            self.stack.callback(self.stream.close)
        return self._scaled

    def guarded_job(self) -> Job:
        """A job that runs only what the run's key signed and reaches Kafka over SASL_SSL as a
        principal with the job's ACLs (the attack cases, the poison record), started on first
        use on a MiniCluster: the cluster's slots hold the other jobs."""
        if self._guarded is None:
            setup = ScoringSetup(self.bootstrap, self.repo, self.store.base_url, self.workdir / "guarded")
            args = setup.job_args(
                bootstrap_servers=self.broker.bootstrap_servers,
                kafka_config=self.broker.admit_job(GUARDED_JOB, setup.topics, setup.group_id),
                trusted_keys=str(self.workdir / "keys" / "public.pem"), no_model_policy="dead-letter",
                load_retry_s=self.retry_after_s, stats_interval_ms=5000)
            # Python workers apart from the job's process, as on a cluster (not PyFlink's local
            # "loopback"), and the model that aborts its worker for the poison-record case.
            env = {**os.environ, "_python_worker_execution_mode": "process",
                   "SCORING_EXTRA_BACKENDS": crashing_model.BACKEND}
            self.stack.enter_context(RunningJob(args, setup.workdir / "job.log", env=env))
            outputs = JobOutputs(setup)
            self.stack.callback(outputs.close)
            self._guarded = Job("guarded", setup, "minicluster", outputs)
            say("started the guarded job (--trusted-keys, SASL_SSL with its ACLs) on a MiniCluster")
        return self._guarded

    def as_principal(self, principal: Principal) -> KafkaClientConfig:
        """How `principal` reaches the broker: the SASL_SSL listener, its ACLs."""
        return self.broker.security.client(self.broker.bootstrap_servers, principal)

    @staticmethod
    def _cancel(job_id: str) -> None:
        try:
            flink_cluster.cancel_job(job_id)
        except (urllib.error.URLError, OSError):
            pass

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT listener the run's own tools (and the jobs but the guarded one) use."""
        return f"127.0.0.1:{self.broker.internal_port}"

    @property
    def eo(self) -> Job:
        return next(j for j in self.jobs if j.delivery == EXACTLY_ONCE)

    def sample_inputs(self, sample: str) -> list[dict]:
        return json.loads((self.samples[sample] / "samples.json").read_text())["inputs"]

    # ---- models -------------------------------------------------------------------------------
    def publish(self, name: str, data_type: str, source: Path, model_type: int,
                jobs: list[Job] | None = None, inline: bool = False,
                rollout: pb.RolloutPolicy | None = None) -> pb.ModelDescriptor:
        """Store a model as the next version of `name` and announce it to the jobs."""
        stored = self.repo.publish(name, source, model_type, data_type)
        d = self.descriptor(stored, inline, rollout=rollout)
        self.announce([d.SerializeToString()], jobs)
        return d

    def descriptor(self, stored: StoredModel, inline: bool = False, rollout: pb.RolloutPolicy | None = None,
                   **changes) -> pb.ModelDescriptor:
        """The stored version's descriptor with `changes`, signed by the run's key (the jobs
        without --trusted-keys ignore the signature; the signed job needs it)."""
        d = cli.descriptor_for(self.repo, stored, self.store.base_url, 1 << 30 if inline else 0, rollout=rollout)
        for key, value in changes.items():
            setattr(d, key, value)
        if d.sha256:
            signing.sign(d, self.signing_key)
        return d

    def announce(self, messages: list[bytes], jobs: list[Job] | None = None) -> None:
        for job in jobs or self.jobs:
            job.setup.announce(messages)

    def serve(self, data_type: str, sample: str, jobs: list[Job] | None = None) -> pb.ModelDescriptor:
        """Publish a sample model for `data_type` (name = data type) and wait until it serves."""
        source, kind = ((self.samples[sample] / "model.pmml", pb.PMML) if sample.endswith("pmml")
                        else (self.samples[sample] / "saved_model", pb.TENSORFLOW_SAVED_MODEL))
        d = self.publish(data_type, data_type, source, kind, jobs)
        for job in jobs or self.jobs:
            # Records sent before the job took the model in would meet "no model" (dead-letter policy);
            # the swap itself happens when a record of the data type arrives: send one.
            job.outputs.wait_event(is_event(Event.ACCEPTED, data_type, d.version),
                                   f"ACCEPTED {data_type} v{d.version}", timeout_s=RECOVERY_TIMEOUT_S)
            job.setup.send_records(data_type, self.sample_inputs(sample)[:1], f"primer-{data_type}")
        for job in jobs or self.jobs:
            job.outputs.wait_event(is_event(Event.AVAILABLE, data_type, d.version),
                                   f"AVAILABLE {data_type} v{d.version}", timeout_s=RECOVERY_TIMEOUT_S)
        return d

    def ensure_served(self, data_type: str, sample: str, jobs: list[Job] | None = None) -> None:
        if data_type not in self.served:
            self.served[data_type] = self.serve(data_type, sample, jobs).version

    # ---- the jobs' health ------------------------------------------------------------------------
    @staticmethod
    def restored(job: Job) -> int:
        """How many times the job restored a checkpoint (after a failure) so far."""
        return flink_cluster.rest(f"/jobs/{job.job_id}/checkpoints")["counts"]["restored"]

    def wait_recovered(self, section: Section | None = None, timeout_s: float = RECOVERY_TIMEOUT_S) -> float:
        """Every job running again and, if a stream runs, caught up with what it sent so far.
        Returns the seconds waited."""
        started = time.monotonic()
        for job in self.jobs:
            wait_until(lambda job=job: _job_running(job.job_id), timeout_s,
                       f"job {job.job_id} ({job.delivery}) running", interval_s=1)
        if section is not None:
            sent = records(section.ids_so_far())
            for job in self.jobs:
                missing = job.outputs.wait_accounted(sent, timeout_s, settle_s=0)
                if missing:
                    raise TimeoutError(f"{job.delivery} job: {missing} of {len(sent)} records "
                                       f"not in its output after {timeout_s}s")
        return time.monotonic() - started
