"""`make bench`: the scoring job measured against its baselines, side by side, in one run.

Writes bench/results/latest.json (and a dated copy), latest.md (a table) and latest.png
(a chart). Every case runs the real job on a local MiniCluster against a real Kafka
broker; nothing here asserts, it reports.

Throughput is a steady-state rate. Each case's job first scores one warm-up record per data
type, so its models are loaded and warm; only then are the measured records produced, with
librdkafka (far faster than any job here), to a topic of the case's own. The rate counts the
results whose broker append times (LogAppendTime) fall between the 10th and 90th percentile
of them all; how many fell before and after that window is reported with it.

    python -m bench.run [--records 200000] [--only SECTION,...|all]

The default run (`make bench`) has the throughput, latency, swap and many-models sections;
`make bench-all` (`--only all`) adds formats, security, rollout, batch_sweep, parallel (p=2
on the MiniCluster) and scale (flink run on two TaskManagers), and `--only bundles` compares
PyFlink bundle sizes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, TopicPartition

from contract import scoring_pb2 as pb
from contract import signing
from contract.json_records import read_result, record_as_json
from contract.values import make_record
from infra import paths
from infra.job_harness import ROLES, RunningJob, ScoringSetup
from infra.kafka_broker import KafkaBroker, free_ports
from infra.kafka_security import BrokerSecurity, Principal
from infra.procs import free_port, port_is_open, wait_until
from infra.topics import create_topics, unique_topics
from model_store import cli
from model_store.kafka_io import committed_reader, produce
from model_store.repository import ModelRepository
from model_store.server import ModelStoreServer
from samples.build import build_all
from scoring.options import ScoringOptions

RESULTS = paths.ROOT / "bench" / "results"
# The models a case can publish, by kind: the CLI's type, the sample, its artifact.
ARTIFACTS = {"tf": ("tensorflow", "wine-tf", "saved_model"), "onnx": ("onnx", "wine-onnx", "model.onnx"),
             "xgboost": ("xgboost", "wine-xgboost", "model.json"), "lightgbm": ("lightgbm", "wine-lightgbm", "model.txt"),
             "digits": ("tensorflow", "digits-tf", "saved_model")}
TREES = ("xgboost", "lightgbm")  # boosted trees: the job and the raw library, in the main run
BENCH_JOB = Principal("bench-scoring-job")
DATA_TYPES = 8  # records are spread over this many data types, so parallelism 2 has work for both
Event = pb.ModelEvent


LOAD_SAMPLES: list[float] = []  # 1-minute load averages seen during the run: the machine is shared


def log(message: str) -> None:
    LOAD_SAMPLES.append(os.getloadavg()[0])
    print(f"[bench {time.strftime('%H:%M:%S')} load {LOAD_SAMPLES[-1]:.1f}] {message}", flush=True)


# ---- helpers ---------------------------------------------------------------------------------
def end_offset(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def committed_records(bootstrap: str, topic: str) -> list:
    """Every committed record of a topic (until none came for 3 s)."""
    consumer = committed_reader(bootstrap, topic)
    out, idle_since = [], time.monotonic()
    try:
        while time.monotonic() - idle_since < 3:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
                idle_since = time.monotonic()
    finally:
        consumer.close()
    return out


def read_all(bootstrap: str, topic: str, parse) -> list:
    """Every committed message of a topic, parsed."""
    return [parse(r.value) for r in committed_records(bootstrap, topic)]


def wait_for_results(setup: ScoringSetup, expected: int, job: RunningJob, timeout_s: float) -> float:
    """Wait until the scores + dead-letter topics hold `expected` messages; seconds waited."""
    started = time.monotonic()
    topics = (setup.topics["scores"], setup.topics["dead-letters"])
    while time.monotonic() - started < timeout_s:
        job.assert_running()
        if sum(end_offset(setup.bootstrap, t) for t in topics) >= expected:
            break
        time.sleep(1)
    return time.monotonic() - started


def produce_fast(bootstrap: str, topic: str, values: list[bytes]) -> float:
    """librdkafka (confluent-kafka): ~10x kafka-python here, so the producer never sets the
    pace of a case. Returns records/s."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all",
                         "queue.buffering.max.messages": 1_000_000})
    started = time.monotonic()
    for value in values:
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError(f"{topic}: records still unsent after 120 s")
    return len(values) / (time.monotonic() - started)


def result_times(bootstrap: str, topic: str, parse, prefix: str = "m-") -> list[int]:
    """When the broker appended the results of the measured records (ids starting with
    `prefix`): their LogAppendTime timestamps, in ms."""
    return [r.timestamp for r in committed_records(bootstrap, topic)
            if parse(r.value).record_id.startswith(prefix)]


def steady(times_ms: list[int], low: float = 10, high: float = 90) -> dict:
    """Records/s between the `low` and `high` percentiles of the result times."""
    if len(times_ms) < 10:
        return {"rps": float("nan"), "results": len(times_ms), "before_window": 0, "after_window": 0}
    start, end = (float(x) for x in np.percentile(times_ms, [low, high]))
    inside = sum(start <= t <= end for t in times_ms)
    return {"rps": inside / ((end - start) / 1000) if end > start else float("nan"), "results": len(times_ms),
            "window_s": (end - start) / 1000, "before_window": sum(t < start for t in times_ms),
            "after_window": sum(t > end for t in times_ms)}


def produce_records(bootstrap: str, topic: str, rows: list[dict], n: int, data_types: list[str],
                    prefix: str = "r") -> None:
    def records():
        for i, (row, data_type) in enumerate(zip(itertools.cycle(rows), itertools.cycle(data_types))):
            if i == n:
                return
            yield make_record(f"{prefix}-{i}", data_type, row, int(time.time() * 1000)).SerializeToString()
    produce(bootstrap, topic, records())


def percentile(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def group_processes(pgid: int) -> list[tuple[int, str]]:
    """(pid, executable) of every live process in a process group, its leader included."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) == pgid:
                found.append((int(proc.name), os.readlink(proc / "exe")))
        except OSError:
            continue
    return found


def peak_rss_mb(pgid: int) -> dict[str, float]:
    """Peak RSS (VmHWM) of the job's JVM and the sum over its Python processes.

    The job runs in a process group of its own. Its leader, the driver, counts as a Python
    worker: on a MiniCluster PyFlink runs the Python functions inside it ("loopback")."""
    peak = {"jvm": 0.0, "python_workers": 0.0}
    for pid, exe in group_processes(pgid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        hwm = next((int(line.split()[1]) / 1024 for line in status.splitlines()
                    if line.startswith("VmHWM")), 0.0)
        if exe.endswith("java"):
            peak["jvm"] = max(peak["jvm"], hwm)
        elif "python" in os.path.basename(exe):
            peak["python_workers"] += hwm
    return peak


# ---- the bench context ------------------------------------------------------------------------
@dataclass
class Workload:
    """What a case sends: sample rows spread over data types, as protobuf or JSON records."""

    rows: list[dict]
    data_types: list[str]
    as_json: bool = False
    _measured: list[bytes] = field(default_factory=list)

    def measured(self, n: int) -> list[bytes]:
        """n serialized records over the data types, ids `m-<i>` (built once, then sliced)."""
        if len(self._measured) < n:
            rows, types = itertools.cycle(self.rows), itertools.cycle(self.data_types)
            records = (make_record(f"m-{i}", next(types), next(rows)) for i in range(n))
            self._measured = [record_as_json(r) if self.as_json else r.SerializeToString() for r in records]
        return self._measured[:n]


class Bench:
    def __init__(self, stack: ExitStack, records: int) -> None:
        self.records = records
        self.workdir = paths.RUN / "bench" / time.strftime("%Y%m%d-%H%M%S")
        self.samples = build_all(paths.RUN / "samples", ["wine-pmml", "wine-tf", "wine-onnx", "wine-xgboost",
                                                          "wine-lightgbm", "digits-tf", "spam-tf"])
        self.rows = json.loads((self.samples["wine-pmml"] / "samples.json").read_text())["inputs"]
        self.keys = self.workdir / "keys"
        signing.new_key_pair(self.keys)
        # The cases' clients use the PLAINTEXT listener; a job with tls=True the SASL_SSL one.
        port, internal = free_ports()
        self.broker = KafkaBroker(self.workdir / "kafka", port=port, internal_port=internal,
                                  security=BrokerSecurity(self.workdir / "kafka-tls", users=(BENCH_JOB,)))
        self.broker.start()
        stack.callback(self.broker.stop)
        self.repo = ModelRepository(self.workdir / "store")
        self.repo.root.mkdir(parents=True)
        self.store = stack.enter_context(ModelStoreServer(self.repo.root))
        self.stack = stack
        self.remote_port = 0  # the remote model server starts with the first case that needs it
        self.case_no = 0
        self.data_types = [f"wine-{k}" for k in range(DATA_TYPES)]
        self.wine = Workload(self.rows, self.data_types)

    @property
    def bootstrap(self) -> str:
        """The broker's PLAINTEXT listener, for the bench's own clients and most jobs."""
        return f"127.0.0.1:{self.broker.internal_port}"

    def measured(self, n: int) -> list[bytes]:
        return self.wine.measured(n)

    def packed_tf(self) -> Path:
        """The wine SavedModel as the job gets it: a .tar.gz."""
        from model_store.repository import pack_saved_model

        packed = self.workdir / "wine-tf.tar.gz"
        if not packed.exists():
            pack_saved_model(self.samples["wine-tf"] / "saved_model", packed)
        return packed

    def setup(self, partitions: int = 2) -> ScoringSetup:
        """A case's own topics: the data topic with two partitions, so p=2 has work for both;
        the scores topic stamps each message when the broker appends it (a sink otherwise
        passes on the timestamp of the record it came from)."""
        self.case_no += 1
        workdir = self.workdir / f"case-{self.case_no}"
        topics = unique_topics(*ROLES)
        create_topics(self.bootstrap, [topics["data"]], partitions=partitions)
        create_topics(self.bootstrap, [topics["scores"]],
                      configs={topics["scores"]: {"message.timestamp.type": "LogAppendTime"}})
        return ScoringSetup(self.bootstrap, self.repo, self.store.base_url, workdir, topics)

    def warm_then_measure(self, setup: ScoringSetup, job: RunningJob, n: int, timeout_s: float,
                          before_measure=None, workload: Workload | None = None) -> float:
        """One record per data type until all are scored (models loaded and warm), then the n
        measured records as fast as librdkafka sends them; returns the producer's records/s.
        `before_measure(setup, job)` runs after the warm-up and returns the records it sent."""
        w = workload or self.wine
        produce_records(setup.bootstrap, setup.topics["data"], w.rows, len(w.data_types), w.data_types, prefix="warm")
        warm = len(w.data_types)
        wait_for_results(setup, warm, job, timeout_s=600)
        if before_measure is not None:
            warm += before_measure(setup, job)
            wait_for_results(setup, warm, job, timeout_s=600)
        producer_rps = produce_fast(setup.bootstrap, setup.topics["data"], w.measured(n))
        wait_for_results(setup, warm + n, job, timeout_s)
        return producer_rps

    def start_remote_server(self) -> None:
        if self.remote_port:
            return
        self.remote_port = free_port()
        remote = subprocess.Popen(
            [sys.executable, "-m", "bench.remote_model", "--port", str(self.remote_port),
             "--saved-model", str(self.samples["wine-tf"] / "saved_model")],
            cwd=paths.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.stack.callback(remote.kill)
        wait_until(lambda: port_is_open(self.remote_port), 120, "remote model server",
                   alive=lambda: remote.poll() is None)

    def publish(self, setup: ScoringSetup, kind: str, data_types: list[str], flags: list[str] | None = None) -> None:
        for data_type in data_types:
            name = f"{kind}-{data_type}"
            if kind == "remote":
                self.start_remote_server()
                spec = Path(setup.workdir / "remote.json")
                spec.write_text(json.dumps({"url": f"http://127.0.0.1:{self.remote_port}/predict",
                                            "inputs": list(self.rows[0])}))
                d = pb.ModelDescriptor(name=name, data_type=data_type, model_type=99, version=1,
                                       inline_bytes=spec.read_bytes(), publish_time_ms=int(time.time() * 1000))
                cli.announce(setup.bootstrap, setup.topics["models"], [d])
            elif kind in ARTIFACTS:
                cli_type, sample, artifact = ARTIFACTS[kind]
                setup.publish(name, data_type, cli_type, self.samples[sample] / artifact, flags=flags or [])
            else:
                setup.publish(name, data_type, "pmml", self.samples["wine-pmml"] / "model.pmml")

    def run_job(self, setup: ScoringSetup, n: int, timeout_s: float, module: str = "jobs.scoring_job",
                before_measure=None, workload: Workload | None = None, tls: bool = False, **job_args) -> dict:
        """A job (the scoring job, or the bare baseline) warmed up, then measured: its steady
        rate over the n records, with the model events it reported. `tls`: the job reaches
        Kafka over SASL_SSL as a principal with the job's ACLs; the bench's own clients stay
        on the plaintext listener."""
        if tls:
            job_args |= {"bootstrap_servers": self.broker.bootstrap_servers,
                         "kafka_config": self.broker.admit_job(BENCH_JOB, setup.topics, setup.group_id)}
        env = {**os.environ, "SCORING_EXTRA_BACKENDS": "99=bench.remote_model:RemoteHttpBackend"}
        args = setup.job_args(delivery="at-least-once", max_held_records=10**7, **with_job_batching(job_args))
        with RunningJob(args, setup.workdir / "job.log", env=env, module=module) as job:
            producer_rps = self.warm_then_measure(setup, job, n, timeout_s, before_measure, workload)
            rss = peak_rss_mb(job.proc.pid)
        parse = pb.DataRecord.FromString if module in BASELINES.values() else read_result
        events = read_all(setup.bootstrap, setup.topics["model-events"], pb.ModelEvent.FromString)
        return {**steady(result_times(setup.bootstrap, setup.topics["scores"], parse)), "records": n,
                "producer_rps": producer_rps, "rss_mb": rss, "events": events}


def with_job_batching(job_args: dict) -> dict:
    """`job_args` with the job's own batch size and wait where they do not say otherwise (the
    harness's ScoringSetup.job_args sets a short wait of its own for the tests)."""
    defaults = ScoringOptions()
    return {"batch_size": defaults.batch_size, "batch_max_wait_ms": defaults.batch_max_wait_ms, **job_args}


# ---- cases ---------------------------------------------------------------------------------------
def raw_library(bench: Bench, kinds: tuple[str, ...] = ("pmml", "tf"), n: int = 100_000,
                batch: int = 256) -> dict[str, float]:
    """The same models in-process, in batches, with no Flink: the library limit."""
    from scoring.backends.registry import backend_for

    out = {}
    models = {"pmml": (pb.PMML, bench.samples["wine-pmml"] / "model.pmml"),
              "tf": (pb.TENSORFLOW_SAVED_MODEL, bench.packed_tf()),
              "onnx": (pb.ONNX, bench.samples["wine-onnx"] / "model.onnx")}
    for key, (model_type, artifact) in ((f"raw_{k}_rps", models[k]) for k in kinds):
        model = backend_for(model_type).load(artifact)
        rows = list(itertools.islice(itertools.cycle(bench.rows), batch))
        warm_until = time.monotonic() + 10  # pmml4s's JVM JIT takes ~50k records to settle
        while time.monotonic() < warm_until:
            model.predict([model.prepare(r) for r in rows])
        started, done = time.perf_counter(), 0
        while done < n:
            model.predict([model.prepare(r) for r in rows])
            done += batch
        out[key] = done / (time.perf_counter() - started)
        model.release()
        log(f"raw {key}: {out[key]:,.0f} records/s")
    return out


def raw_trees(bench: Bench, seconds: float = 5, batch: int = 256) -> dict[str, float]:
    """The boosted trees' libraries alone, on one thread: XGBoost's inplace_predict and
    LightGBM's predict on a matrix of `batch` rows built beforehand (no backend, no checks)."""
    import lightgbm as lgb
    import xgboost as xgb

    rows = list(itertools.islice(itertools.cycle(bench.rows), batch))
    xgb_model = xgb.Booster(model_file=str(bench.samples["wine-xgboost"] / "model.json"))
    xgb_model.set_param({"nthread": 1})
    lgb_model = lgb.Booster(model_file=str(bench.samples["wine-lightgbm"] / "model.txt"))
    calls = {"xgboost": (xgb_model.inplace_predict, xgb_model.feature_names, np.float32, {}),
             "lightgbm": (lgb_model.predict, lgb_model.feature_name(), np.float64, {"num_threads": 1})}
    out = {}
    for kind, (predict, features, dtype, kwargs) in calls.items():
        x = np.array([[r[f] for f in features] for r in rows], dtype=dtype)
        for _round in ("warm-up", "measured"):
            started, done = time.perf_counter(), 0
            while time.perf_counter() - started < seconds:
                predict(x, **kwargs)
                done += batch
        out[f"raw_{kind}_rps"] = done / (time.perf_counter() - started)
        log(f"raw {kind}: {out[f'raw_{kind}_rps']:,.0f} records/s")
    return out


# The baselines' jobs: their "scores" are the records themselves.
BASELINES = {"bare": "bench.bare_job", "jvm_only": "bench.jvm_only_job"}
JOB_MODULES = {**BASELINES, "passthrough": "bench.passthrough_job"}  # the rest run the scoring job


def throughput_case(bench: Bench, kind: str, parallelism: int, n: int, workload: Workload | None = None,
                    flags: list[str] | None = None, label: str = "", **job_args) -> dict:
    """The job with its default batch size and wait, as users run it (the sweep varies them);
    `bare` is the bare-PyFlink baseline: the same topology with identity functions.
    Pass-through loads PMML models (TF ones in thread mode, where PMML does not load)."""
    setup = bench.setup()
    w = workload or bench.wine
    thread = job_args.get("execution_mode") == "thread"
    label = label or kind + (" (thread mode)" if thread else "")
    bench.publish(setup, ("tf" if thread else "pmml") if kind in (*BASELINES, "passthrough") else kind,
                  w.data_types, flags)
    found = bench.run_job(setup, n, timeout_s=900, parallelism=parallelism, module=JOB_MODULES.get(kind, "jobs.scoring_job"),
                          workload=w, **job_args)
    log(f"{label} p={parallelism}: {found['results']:,} of {n:,} results, {found['rps']:,.0f} records/s steady "
        f"({found['before_window']:,} before and {found['after_window']:,} after the window; "
        f"producer {found['producer_rps']:,.0f}/s)")
    return {k: v for k, v in found.items() if k != "events"} | {"parallelism": parallelism} | model_calls(found["events"])


def rollout_case(bench: Bench, n: int) -> dict:
    """PMML throughput with every data type's v2 in shadow (each record scored by both
    models) ÷ without, one after the other in one run; and, in the shadow job before its
    measured records, how long a 1,000-record gate takes from publish to PROMOTED while its
    data type's records arrive as fast as librdkafka sends them."""
    pmml = bench.samples["wine-pmml"] / "model.pmml"
    decision: dict = {}

    def events_of(setup: ScoringSetup, state: int) -> list[pb.ModelEvent]:
        return [e for e in setup.events(timeout_s=1) if e.state == state]

    def nudge(setup: ScoringSetup, job: RunningJob, done, data_types: list[str], prefix: str) -> int:
        """A record per data type a second until `done()`; returns how many were sent."""
        sent = 0
        while not done():
            job.assert_running()
            produce_records(setup.bootstrap, setup.topics["data"], bench.rows, len(data_types), data_types,
                            prefix=f"{prefix}-{sent}")
            sent += len(data_types)
        return sent

    def start_shadows(setup: ScoringSetup, job: RunningJob) -> int:
        for data_type in bench.data_types:
            setup.publish(f"pmml-{data_type}", data_type, "pmml", pmml, flags=["--shadow", "--min-records", "10000000"])
        sent = nudge(setup, job, lambda: len({e.data_type for e in events_of(setup, pb.ModelEvent.ROLLOUT_STARTED)})
                     >= len(bench.data_types), bench.data_types, "shadow-wait")
        return sent + gate(setup, job)

    def gate(setup: ScoringSetup, job: RunningJob) -> int:
        setup.publish("gate", "gate", "pmml", pmml)
        sent = nudge(setup, job, lambda: any(e.data_type == "gate" for e in events_of(setup, pb.ModelEvent.AVAILABLE)),
                     ["gate"], "gate-v1")
        published = time.time() * 1000
        setup.publish("gate", "gate", "pmml", pmml, flags=["--shadow", "--min-records", "1000", "--tolerance", "1e-9"])
        records = [make_record(f"gate-{i}", "gate", bench.rows[i % len(bench.rows)]).SerializeToString()
                   for i in range(20_000)]
        produce_fast(setup.bootstrap, setup.topics["data"], records)
        found = {}
        while len(found) < 2:
            job.assert_running()
            found = {e.state: e for e in setup.events(timeout_s=1) if e.data_type == "gate" and e.model_version == 2
                     and e.state in (pb.ModelEvent.ROLLOUT_STARTED, pb.ModelEvent.PROMOTED)}
        started, promoted = found[pb.ModelEvent.ROLLOUT_STARTED], found[pb.ModelEvent.PROMOTED]
        decision.update(publish_to_rollout_started_ms=started.time_ms - published,
                        rollout_started_to_promoted_ms=promoted.time_ms - started.time_ms,
                        publish_to_promoted_ms=promoted.time_ms - published,
                        gate_records=promoted.stats["records"])
        log(f"gate of 1,000 records: publish -> ROLLOUT_STARTED {decision['publish_to_rollout_started_ms']:,.0f} ms, "
            f"-> PROMOTED {decision['publish_to_promoted_ms']:,.0f} ms")
        return sent + len(records)

    rates = {}
    for shadow in (False, True):
        setup = bench.setup()
        bench.publish(setup, "pmml", bench.data_types)
        found = bench.run_job(setup, n, timeout_s=900, before_measure=start_shadows if shadow else None)
        rates["shadow" if shadow else "alone"] = found["rps"]
        log(f"pmml {'with a shadow' if shadow else 'alone'}: {found['rps']:,.0f} records/s steady "
            f"({found['before_window']:,} before and {found['after_window']:,} after the window)")
    return {"pmml_alone_rps": rates["alone"], "pmml_with_shadow_rps": rates["shadow"],
            "shadow_ratio": rates["shadow"] / rates["alone"], **decision}


def formats_case(bench: Bench, n: int) -> dict:
    """ONNX against raw onnxruntime; JSON records against protobuf ones on pass-through (the
    pipeline's own cost); explanations for 0%, 1% and 100% of image records (digits-tf,
    integrated gradients, 64 steps). Side by side in one run."""
    out = raw_library(bench, ("onnx",))
    out["onnx_rps"] = throughput_case(bench, "onnx", 1, n)["rps"]
    out["onnx_job_over_raw"] = out["onnx_rps"] / out["raw_onnx_rps"]
    out["passthrough_protobuf_rps"] = throughput_case(bench, "passthrough", 1, n, label="passthrough protobuf")["rps"]
    as_json = Workload(bench.rows, bench.data_types, as_json=True)
    out["passthrough_json_rps"] = throughput_case(bench, "passthrough", 1, n, as_json, label="passthrough json")["rps"]
    out["json_over_protobuf"] = out["passthrough_json_rps"] / out["passthrough_protobuf_rps"]
    images = Workload(json.loads((bench.samples["digits-tf"] / "samples.json").read_text())["inputs"],
                      [f"image-{k}" for k in range(4)])
    n_images = max(n // 20, 1000)
    for fraction in (0.0, 0.01, 1.0):
        out[f"explain_{fraction:g}_rps"] = throughput_case(
            bench, "digits", 1, n_images, images, ["--explain-fraction", str(fraction)],
            label=f"digits, explaining {fraction:.0%}")["rps"]
    for fraction in (0.01, 1.0):
        out[f"explain_{fraction:g}_over_none"] = out[f"explain_{fraction:g}_rps"] / out["explain_0_rps"]
    return out


def median_ms(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def trust_checks(bench: Bench, repeats: int = 20) -> list[dict]:
    """Per model load, in-process: the signature check (Ed25519 over the descriptor's
    statement), the SHA-256 of the artifact's bytes (the SavedModel's files, about the size of
    the .tar.gz the fetcher checks), and the graph check of a SavedModel (parse
    saved_model.pb, walk every node and function), by model size; medians."""
    from scoring.backends.graph_check import unsafe_ops

    key = signing.load_private_key(bench.keys / "private.pem")
    trusted = signing.load_trust([str(bench.keys / "public.pem")])
    rows = []
    for sample in ("wine-tf", "digits-tf", "spam-tf"):
        folder = bench.samples[sample] / "saved_model"
        graph = (folder / "saved_model.pb").read_bytes()
        artifact = b"".join(f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file())
        d = pb.ModelDescriptor(name=sample, data_type=sample, model_type=pb.TENSORFLOW_SAVED_MODEL, version=1,
                               sha256=hashlib.sha256(artifact).hexdigest())
        signing.sign(d, key)
        rows.append({"model": sample, "artifact_kb": len(artifact) / 1024, "graph_kb": len(graph) / 1024,
                     "verify_signature_ms": median_ms(lambda d=d: signing.verify(d, trusted), repeats),
                     "sha256_ms": median_ms(lambda a=artifact: hashlib.sha256(a).hexdigest(), repeats),
                     "graph_check_ms": median_ms(lambda g=graph: unsafe_ops(g), repeats)})
        log(f"trust checks {sample}: {rows[-1]}")
    return rows


def security_case(bench: Bench, n: int) -> dict:
    """The job reading and writing Kafka over SASL_SSL (TLS, SCRAM-SHA-512, ACLs enforced)
    against plaintext, on pass-through and PMML, back to back; and the trust checks' cost."""
    out: dict = {"trust_checks": trust_checks(bench)}
    for kind in ("passthrough", "pmml"):
        out[f"{kind}_plaintext_rps"] = throughput_case(bench, kind, 1, n, label=f"{kind} plaintext")["rps"]
        out[f"{kind}_tls_rps"] = throughput_case(bench, kind, 1, n, label=f"{kind} SASL_SSL", tls=True)["rps"]
        out[f"{kind}_tls_over_plaintext"] = out[f"{kind}_tls_rps"] / out[f"{kind}_plaintext_rps"]
    return out


def bundles_case(bench: Bench, n: int) -> dict:
    """PyFlink's bundle size (records between two waits of the JVM for the Python worker) at
    Flink's default and 20x it, for pass-through and PMML, back to back."""
    out = {}
    for kind in ("passthrough", "pmml"):
        for size in (1000, 20_000):
            out[f"{kind}_bundle_{size}_rps"] = throughput_case(
                bench, kind, 1, n, label=f"{kind} bundle.size {size}", bundle_size=size)["rps"]
        out[f"{kind}_bundle_ratio"] = out[f"{kind}_bundle_20000_rps"] / out[f"{kind}_bundle_1000_rps"]
    return out


def plain_consumer_case(bench: Bench, kind: str, n: int) -> dict:
    """What a user would write instead: a kafka-python loop around the same model."""
    setup = bench.setup(partitions=1)
    artifact = bench.samples["wine-pmml"] / "model.pmml" if kind == "pmml" else bench.packed_tf()
    warm = len(bench.data_types)
    produce_records(setup.bootstrap, setup.topics["data"], bench.rows, warm, bench.data_types, prefix="warm")
    consumer = subprocess.Popen(
        [sys.executable, "-m", "bench.plain_consumer", "--bootstrap-servers", setup.bootstrap,
         "--data-topic", setup.topics["data"], "--scores-topic", setup.topics["scores"],
         "--model-type", "pmml" if kind == "pmml" else "tensorflow", "--artifact", str(artifact),
         "--records", str(warm + n)], cwd=paths.ROOT, stdout=open(setup.workdir / "consumer.log", "ab"),
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: end_offset(setup.bootstrap, setup.topics["scores"]) >= warm, 300,
                   "the plain consumer's warm-up", alive=lambda: consumer.poll() is None)
        producer_rps = produce_fast(setup.bootstrap, setup.topics["data"], bench.measured(n))
        consumer.wait(timeout=900)
    finally:
        if consumer.poll() is None:
            os.killpg(consumer.pid, signal.SIGKILL)
    found = steady(result_times(setup.bootstrap, setup.topics["scores"], pb.ScoringResult.FromString))
    log(f"plain consumer {kind}: {found['results']:,} of {n:,} results, {found['rps']:,.0f} records/s steady")
    return found | {"records": n, "producer_rps": producer_rps}


def batch_sweep(bench: Bench, n: int) -> list[dict]:
    rows = []
    for size in (1, 8, 64, 256):
        setup = bench.setup()
        bench.publish(setup, "pmml", bench.data_types)
        found = bench.run_job(setup, n, timeout_s=600, batch_size=size)
        calls = model_calls(found["events"])
        rows.append({"batch_size": size, "rps": found["rps"], **calls})
        log(f"batch {size}: {rows[-1]['rps']:,.0f} records/s, {calls['batch_mean_ms']:.2f} ms per model call "
            f"of {calls['records_per_call']:.1f} records")
    return rows


def model_calls(events: list[pb.ModelEvent]) -> dict[str, float]:
    """Model-call statistics over every data type (each one's latest STATS event): batches are
    flushed by size or by the batch wait, so a call holds `records_per_call`, not the size."""
    latest = {e.data_type: e.stats for e in events if e.state == Event.STATS}
    usage, calls, total_ms, serve_ms = (sum(s.get(k, 0.0) for s in latest.values())
                                        for k in ("usage", "batches", "total_ms", "serve_ms"))
    nan = float("nan")
    return {"batch_mean_ms": total_ms / calls if calls else nan,
            "records_per_call": usage / calls if calls else nan,
            "ms_per_record_in_batch": total_ms / usage if usage else nan,
            # the columnar path: all of the job's own Python per batch and per record, the model call included
            "python_us_per_batch": serve_ms * 1000 / calls if calls and serve_ms else nan,
            "python_us_per_record": serve_ms * 1000 / usage if usage and serve_ms else nan}


def produce_at_rate(bootstrap: str, topic: str, w: Workload, rate: float, seconds: float) -> int:
    """Records `m-<i>` at a steady `rate` for `seconds`, each stamped with the time it was sent
    (its event time, which its result carries back); returns how many were sent. The records
    are built before the clock starts, their event time appended as it is sent (protobuf reads
    fields in any order), so the producer costs little of the cores the job runs on."""
    from confluent_kafka import Producer

    if w.as_json:
        raise ValueError("produce_at_rate appends a protobuf field: it sends protobuf records only")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "acks": "1"})
    records = w.measured(int(rate * seconds) + 1)
    started, sent = time.monotonic(), 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = min(int(elapsed * rate), len(records))
        if due > sent:
            stamp = b"\x18" + _varint(int(time.time() * 1000))  # DataRecord.event_time_ms, field 3
            for record in records[sent:due]:
                producer.produce(topic, record + stamp)
            sent = due
        producer.poll(0)
        time.sleep(0.002)
    if producer.flush(60):
        raise RuntimeError(f"{topic}: records still unsent after 60 s")
    return sent


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def latency_case(bench: Bench, kind: str, max_rps: float, seconds: float = 45, execution_mode: str = "process",
                 **job_args) -> dict:
    """End to end, record made -> result appended to the scores topic (LogAppendTime), at a
    steady half of the measured maximum rate, at-least-once, the job's defaults (or `job_args`)."""
    rate = max_rps / 2
    setup = bench.setup()
    bench.publish(setup, kind, bench.data_types)
    args = setup.job_args(delivery="at-least-once", max_held_records=10**7, execution_mode=execution_mode,
                          **with_job_batching(job_args))
    with RunningJob(args, setup.workdir / "job.log") as job:
        produce_records(setup.bootstrap, setup.topics["data"], bench.rows, len(bench.data_types), bench.data_types,
                        prefix="warm")
        wait_for_results(setup, len(bench.data_types), job, timeout_s=600)
        sent = produce_at_rate(setup.bootstrap, setup.topics["data"], bench.wine, rate, seconds)
        wait_for_results(setup, len(bench.data_types) + sent, job, timeout_s=300)
    latencies = []
    for r in committed_records(setup.bootstrap, setup.topics["scores"]):
        result = read_result(r.value)
        if result.record_id.startswith("m-"):
            latencies.append(r.timestamp - result.event_time_ms)
    out = {"rate_rps": rate, "records": sent, "results": len(latencies), "p50_ms": percentile(latencies, 50),
           "p99_ms": percentile(latencies, 99), "max_ms": float(max(latencies, default=float("nan")))}
    log(f"{kind} ({execution_mode} mode) at {rate:,.0f} records/s (half of {max_rps:,.0f}): p50 {out['p50_ms']:.0f} ms, "
        f"p99 {out['p99_ms']:.0f} ms, max {out['max_ms']:.0f} ms over {len(latencies):,} results")
    return out


def swap_case(bench: Bench, publishes: int = 10, rate: int = 500, gap_s: float = 6) -> dict:
    """A steady stream; `publishes` new versions alternating PMML and TensorFlow."""
    setup = bench.setup()
    bench.publish(setup, "pmml", ["swap"])
    stop, sent = threading.Event(), []

    def stream():
        for n in itertools.count():
            if stop.is_set():
                return
            ids = setup.send_records("swap", bench.rows[: rate // 10], prefix=f"s{n}")
            sent.extend(ids)
            time.sleep(0.1)

    publish_times: dict[int, float] = {}
    with RunningJob(setup.job_args(delivery="at-least-once", batch_size=64, batch_max_wait_ms=20),
                    setup.workdir / "job.log") as job:
        consumer = KafkaConsumer(setup.topics["scores"], bootstrap_servers=setup.bootstrap,
                                 auto_offset_reset="earliest", group_id=None)
        received: list[tuple[float, pb.ScoringResult]] = []
        reader_stop = threading.Event()

        def read():
            while not reader_stop.is_set():
                for records in consumer.poll(timeout_ms=200).values():
                    now = time.time()
                    received.extend((now, pb.ScoringResult.FromString(r.value)) for r in records)

        reader = threading.Thread(target=read)
        reader.start()
        producer = threading.Thread(target=stream)
        producer.start()
        try:
            setup.wait_for_event(Event.AVAILABLE, "swap", 1, timeout_s=180)
            time.sleep(gap_s)
            for k in range(publishes):
                kind, path = (("tensorflow", bench.samples["wine-tf"] / "saved_model") if k % 2 == 0
                              else ("pmml", bench.samples["wine-pmml"] / "model.pmml"))
                publish_times[k + 2] = time.time()
                setup.publish("pmml-swap", "swap", kind, path)
                time.sleep(gap_s)
                job.assert_running()
        finally:
            stop.set()
            producer.join()
            time.sleep(5)
            reader_stop.set()
            reader.join()
            consumer.close()
    first_seen = {}
    for at, r in received:
        first_seen.setdefault(r.model_version, at)
    to_first = [first_seen[v] - t for v, t in publish_times.items() if v in first_seen]
    latency = [(at, at * 1000 - r.event_time_ms) for at, r in received]
    near = [ms for at, ms in latency if any(abs(at - (t + d)) <= 2.5 for t, d in
                                            ((publish_times[v], to_first[i]) for i, v in
                                             enumerate(v for v in publish_times if v in first_seen)))]
    # Steady state: after the first model served for 10 s (the start-up backlog has drained),
    # and more than 5 s away from any publish.
    settled = first_seen.get(1, 0) + 10
    steady = [ms for at, ms in latency
              if at > settled and all(abs(at - t) > 5 for t in publish_times.values())]
    ids = [r.record_id for _, r in received]
    result = {
        "publishes": publishes, "rate_per_s": rate, "versions_seen": len(first_seen),
        "publish_to_first_p50_s": percentile(to_first, 50), "publish_to_first_p95_s": percentile(to_first, 95),
        "latency_steady_p50_ms": percentile(steady, 50), "latency_steady_p99_ms": percentile(steady, 99),
        "latency_swap_p50_ms": percentile(near, 50), "latency_swap_p99_ms": percentile(near, 99),
        "lost": len(set(sent) - set(ids)), "duplicated": len(ids) - len(set(ids)),
    }
    result["latency_p99_ratio"] = result["latency_swap_p99_ms"] / result["latency_steady_p99_ms"]
    log(f"swap: publish->first p50 {result['publish_to_first_p50_s']:.2f}s p95 "
        f"{result['publish_to_first_p95_s']:.2f}s; p99 latency around swaps / steady "
        f"{result['latency_p99_ratio']:.2f}; lost {result['lost']}, duplicated {result['duplicated']}")
    return result


SMALL_MODEL_INPUTS = ("alcohol", "malic_acid", "ash")


def small_pmml(k: int) -> str:
    """A small linear regression PMML, different coefficients per model."""
    fields = SMALL_MODEL_INPUTS
    coefficients = "".join(f'<NumericPredictor name="{f}" coefficient="{(k % 7 + 1) * 0.1 * (i + 1):.3f}"/>'
                           for i, f in enumerate(fields))
    data_fields = "".join(f'<DataField name="{f}" optype="continuous" dataType="double"/>' for f in fields)
    mining = "".join(f'<MiningField name="{f}"/>' for f in fields)
    return (f'<?xml version="1.0"?><PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">'
            f'<Header description="bench model {k}"/><DataDictionary>{data_fields}'
            f'<DataField name="y" optype="continuous" dataType="double"/></DataDictionary>'
            f'<RegressionModel functionName="regression"><MiningSchema>{mining}'
            f'<MiningField name="y" usageType="target"/></MiningSchema>'
            f'<RegressionTable intercept="{k * 0.01:.2f}">{coefficients}</RegressionTable>'
            f'</RegressionModel></PMML>')


def publish_small_models(setup: ScoringSetup, models: int) -> list[str]:
    """One small PMML model per data type t0..t<models-1>, inline; returns the data types."""
    data_types = [f"t{k}" for k in range(models)]
    descriptors = [pb.ModelDescriptor(name=f"m{k}", data_type=data_type, model_type=pb.PMML, version=1,
                                      inline_bytes=small_pmml(k).encode(), publish_time_ms=int(time.time() * 1000))
                   for k, data_type in enumerate(data_types)]
    cli.announce(setup.bootstrap, setup.topics["models"], descriptors)
    return data_types


def small_rows(bench: Bench) -> list[dict]:
    return [{k: r[k] for k in SMALL_MODEL_INPUTS} for r in bench.rows]


def many_models(bench: Bench, models: int, n: int) -> dict:
    setup = bench.setup()
    data_types = publish_small_models(setup, models)
    rows = small_rows(bench)
    # One record per data type first, so every model is loaded before the timed records.
    produce_records(setup.bootstrap, setup.topics["data"], rows, models, data_types, prefix="warm")
    args = setup.job_args(delivery="at-least-once", batch_size=64, model_cache_size=models + 100)
    with RunningJob(args, setup.workdir / "job.log") as job:
        wait_for_results(setup, models, job, timeout_s=600)
        log(f"many models: all {models} serving; sending {n:,} records round-robin ...")
        sent_at = time.time()
        produce_records(setup.bootstrap, setup.topics["data"], rows, n, data_types, prefix="timed")
        producer_rps = n / (time.time() - sent_at)
        wait_for_results(setup, models + n, job, timeout_s=900)
        rss = peak_rss_mb(job.proc.pid)
    results = [r for r in read_all(setup.bootstrap, setup.topics["scores"], pb.ScoringResult.FromString)
               if r.record_id.startswith("timed-")]
    events = read_all(setup.bootstrap, setup.topics["model-events"], pb.ModelEvent.FromString)
    info = {"events": events, "rss_mb": rss}
    times = [r.scoring_time_ms for r in results]
    rps = len(times) / ((max(times) - min(times)) / 1000) if len(times) > 1 else float("nan")
    ready = [e for e in info["events"] if e.state == Event.READY]
    load_ms = [e.fetch_ms + e.load_ms + e.warm_up_ms for e in ready]
    out = {"models": models, "records": n, "scored": len(results), "rps": rps, "producer_rps": producer_rps,
           "peak_rss_mb": info["rss_mb"]["jvm"] + info["rss_mb"]["python_workers"],
           "peak_rss_jvm_mb": info["rss_mb"]["jvm"], "peak_rss_python_mb": info["rss_mb"]["python_workers"],
           "load_ms_p50": percentile(load_ms, 50), "load_ms_p95": percentile(load_ms, 95),
           "load_ms_max": max(load_ms) if load_ms else float("nan"), "models_loaded": len(ready)}
    log(f"many models: {out['models_loaded']} loaded, {out['rps']:,.0f} records/s, "
        f"peak RSS {out['peak_rss_mb']:,.0f} MB, load p50 {out['load_ms_p50']:.0f} ms")
    return out


# ---- report ---------------------------------------------------------------------------------------
def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.ROOT, capture_output=True, text=True)
    return done.stdout.strip()


def machine() -> dict:
    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def write_report(report: dict, name: str = "") -> None:
    """latest.{json,md,png} and a dated copy of the JSON; or, for a partial run given a
    `name`, <date>-<name>.{json,md}, leaving the full run's files alone."""
    from bench.report import chart, markdown

    report["machine"]["load_avg_1m"] = {"median": float(np.median(LOAD_SAMPLES or [0])),
                                        "max": max(LOAD_SAMPLES or [0])}

    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1, default=float)
    dated = RESULTS / f"{dt.date.today().isoformat()}{'-' + name if name else ''}"
    dated.with_suffix(".json").write_text(text)
    if name:
        dated.with_suffix(".md").write_text(markdown(report))
        return
    (RESULTS / "latest.json").write_text(text)
    (RESULTS / "latest.md").write_text(markdown(report))
    chart(report, RESULTS / "latest.png")


def stop_on_sigterm() -> None:
    """Run the clean-ups (ExitStack, RunningJob) on `kill` too."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


DEFAULT_SECTIONS = ("throughput", "latency", "swap", "many_models")
SECTIONS = (*DEFAULT_SECTIONS, "formats", "security", "rollout", "batch_sweep", "parallel", "scale")


def throughput_section(bench: Bench, n: int) -> dict:
    """The main run's rates, side by side: the raw libraries, the JVM-only and bare-PyFlink
    baselines, the job (columnar, the default) per backend in both execution modes, the record
    path for comparison, and plain consumer loops. Cases that run below ~20k records/s get a
    quarter of the records: their steady window is long enough with fewer."""
    slow = max(n // 4, 1000)
    t = raw_library(bench, ("pmml", "tf", "onnx")) | raw_trees(bench)
    stop_on_sigterm()  # pypmml's in-process JVM took SIGTERM over: it would exit, skipping the clean-ups
    t["jvm_only_rps"] = throughput_case(bench, "jvm_only", 1, n)["rps"]
    t["bare_pyflink_rps"] = throughput_case(bench, "bare", 1, n)["rps"]
    for kind in ("passthrough", "pmml", "tf", "onnx", *TREES):
        found = throughput_case(bench, kind, 1, slow if kind == "pmml" else n)
        t[f"{kind}_rps"] = found["rps"]
        for key in ("python_us_per_batch", "python_us_per_record", "records_per_call"):
            t[f"{kind}_{key}"] = found[key]
    # Thread mode: the Python embedded in the TaskManager's JVM; PMML does not load there.
    t["bare_pyflink_thread_rps"] = throughput_case(bench, "bare", 1, n, execution_mode="thread")["rps"]
    for kind in ("passthrough", "tf", "onnx"):
        t[f"{kind}_thread_rps"] = throughput_case(bench, kind, 1, n, execution_mode="thread")["rps"]
    # The record path (one element per record, as before the columnar path), in the same run.
    for kind in ("passthrough", "tf", "onnx"):
        t[f"{kind}_record_path_rps"] = throughput_case(bench, kind, 1, slow, label=f"{kind} record path",
                                                       columnar="false", batch_size=64)["rps"]
    for kind in ("pmml", "tf"):
        t[f"plain_consumer_{kind}_rps"] = plain_consumer_case(bench, kind, slow)["rps"]
    # ~165 records/s: a few thousand records give a steady rate.
    t["remote_http_rps"] = throughput_case(bench, "remote", 1, max(n // 250, 1000))["rps"]
    t["ratios"] = {
        "passthrough_over_jvm_only": t["passthrough_rps"] / t["jvm_only_rps"],
        **{f"{k}_over_raw": t[f"{k}_rps"] / t[f"raw_{k}_rps"] for k in ("pmml", "tf", "onnx", *TREES)},
        **{f"{k}_over_record_path": t[f"{k}_rps"] / t[f"{k}_record_path_rps"] for k in ("passthrough", "tf", "onnx")},
        **{f"{k}_thread_over_process": t[f"{k}_thread_rps"] / t[f"{k}_rps"] for k in ("passthrough", "tf", "onnx")},
    }
    return t


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000,
                   help="per fast case (a quarter for the slow ones): the columnar job at ~70k records/s "
                        "needs a million for a steady window of ~10 s")
    p.add_argument("--only", default=",".join(DEFAULT_SECTIONS), help=f"sections, or all: {', '.join(SECTIONS)}")
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--name", default="", help="a partial run: write bench/results/<date>-<name>.{json,md}, "
                                              "not latest.*")
    args = p.parse_args(argv)
    only = set(SECTIONS if args.only == "all" else args.only.split(","))
    report: dict = {"machine": machine(), "git_commit": git_commit(), "date": dt.datetime.now().isoformat(),
                    "records": args.records}
    started = time.monotonic()
    with ExitStack() as stack:
        bench = Bench(stack, args.records)
        if "throughput" in only:
            report["throughput"] = throughput_section(bench, args.records)
            write_report(report, args.name)  # after each section, so a cut-short run still reports
        if "parallel" in only:
            t = report.setdefault("throughput", {})
            for kind in ("passthrough", "pmml", "tf"):
                t[f"{kind}_p2_rps"] = throughput_case(bench, kind, 2, args.records)["rps"]
            write_report(report, args.name)
        if "latency" in only:
            measured = report.get("throughput", {})
            report["latency"] = {}
            for key, kind, mode in (("pmml", "pmml", "process"), ("tf", "tf", "process"), ("tf_thread", "tf", "thread")):
                max_rps = measured.get(f"{key}_rps") or throughput_case(
                    bench, kind, 1, args.records, execution_mode=mode)["rps"]
                report["latency"][key] = latency_case(bench, kind, max_rps, execution_mode=mode)
            write_report(report, args.name)
        if "formats" in only:
            report["formats"] = formats_case(bench, args.records)
            write_report(report, args.name)
        if "security" in only:
            report["security"] = security_case(bench, args.records)
            write_report(report, args.name)
        if "bundles" in only:  # not in the default run: `--only bundles`
            report["bundles"] = bundles_case(bench, args.records)
            write_report(report, args.name)
        if "swap" in only:
            report["swap"] = swap_case(bench)
            write_report(report, args.name)
        if "rollout" in only:
            report["rollout"] = rollout_case(bench, args.records)
            write_report(report, args.name)
        if "many_models" in only:
            report["many_models"] = many_models(bench, args.models, max(args.records // 4, 1000))
            write_report(report, args.name)
        if "batch_sweep" in only:
            report["batch_sweep"] = batch_sweep(bench, max(args.records // 8, 1000))
            write_report(report, args.name)
        if "scale" in only:  # last: it starts the standalone cluster with two TaskManagers
            from bench import at_scale

            report["scale"] = at_scale.section(bench, max(args.records // 4, 1000))
    report["duration_s"] = time.monotonic() - started
    write_report(report, args.name)
    return 0


if __name__ == "__main__":
    # The main of the imported `bench.run`, not of this `__main__` copy: bench.at_scale imports
    # `bench.run`, and the two copies would keep two LOAD_SAMPLES.
    from bench import run

    sys.exit(run.main())
