"""What both demos share: a broker, the model store and the Flink cluster of their own, the
scoring job submitted with `flink run`, a record stream, and a watcher that prints what the
job reports."""

from __future__ import annotations

import argparse
import collections
import itertools
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer

from contract import scoring_pb2 as pb
from contract.json_records import read_result
from contract.topics import TopicNames
from contract.values import make_record
from infra import flink_cluster
from infra.kafka_broker import KafkaBroker
from infra.procs import free_port
from infra.topics import create_job_topics
from model_store import cli
from model_store.kafka_io import produce
from model_store.repository import ModelRepository
from model_store.server import ModelStoreServer
from model_store.status import rollout_numbers

RATE_PER_S = 200
PHASE_S = 20
State = pb.ModelEvent.State


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Watcher(threading.Thread):
    """Reads scores, dead letters and model events as they are committed; prints progress."""

    def __init__(self, bootstrap: str, topics: TopicNames) -> None:
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(
            topics.scores, topics.dead_letters, topics.model_events, bootstrap_servers=bootstrap,
            auto_offset_reset="earliest", isolation_level="read_committed", group_id=None)
        self.topics = topics
        self.scored: dict[str, int] = {}
        self.by_version: collections.Counter = collections.Counter()
        self.dead: dict[str, str] = {}
        self.duplicates = 0
        self.latest_stats: dict[tuple[str, int], dict] = {}
        self.events: list[pb.ModelEvent] = []
        self.stop = threading.Event()

    def run(self) -> None:
        last_print = time.monotonic()
        while not self.stop.is_set():
            for tp, records in self.consumer.poll(timeout_ms=300).items():
                for r in records:
                    self.take(tp.topic, r.value)
            if time.monotonic() - last_print >= 2:
                last_print = time.monotonic()
                counts = ", ".join(f"{n} v{v}: {c}" for (n, v), c in sorted(self.by_version.items()))
                say(f"scored {len(self.scored)} ({counts or 'none yet'}), dead-lettered {len(self.dead)}")
        self.consumer.close()

    def take(self, topic: str, value: bytes) -> None:
        if topic == self.topics.scores:
            r = read_result(value)
            self.duplicates += r.record_id in self.scored
            self.scored[r.record_id] = r.model_version
            self.by_version[(r.model_name, r.model_version)] += 1
        elif topic == self.topics.dead_letters:
            d = pb.DeadLetter.FromString(value)
            self.dead[d.record_id or f"unparsed-{len(self.dead)}"] = d.reason
        else:
            e = pb.ModelEvent.FromString(value)
            self.events.append(e)
            if e.state == State.STATS or e.state == State.UNLOADED:
                self.latest_stats[(e.model_name, e.model_version)] = dict(e.stats)
            if e.state != State.STATS:
                timing = f" (fetch {e.fetch_ms:.0f} ms, load {e.load_ms:.0f} ms, warm-up {e.warm_up_ms:.0f} ms)" \
                    if e.state == State.READY else ""
                if e.state == State.SHADOW_STATS:
                    timing = rollout_numbers(e)
                say(f"model event: {State.Name(e.state)} {e.model_name} v{e.model_version} "
                    f"for '{e.data_type}' {e.reason}{timing}")


def stream_records(bootstrap: str, topic: str, rows: list[dict], sent: list[str], stop: threading.Event,
                   data_type: str = "wine", shape: Callable[[dict, int], dict] = lambda row, i: row) -> None:
    """~RATE_PER_S records a second until `stop`; `shape(row, i)` may change the i-th row."""
    batch = RATE_PER_S // 10
    for n in itertools.count():
        if stop.is_set():
            return
        records = [make_record(f"{data_type}-{n}-{i}", data_type, shape(row, n * batch + i), int(time.time() * 1000))
                   for i, row in enumerate(itertools.islice(itertools.cycle(rows), n, n + batch))]
        produce(bootstrap, topic, (r.SerializeToString() for r in records))
        sent.extend(r.record_id for r in records)
        time.sleep(0.1)


def submit_job(bootstrap: str, store_url: str, topics: TopicNames, run_dir: Path, *extra: str) -> str:
    return flink_cluster.submit_scoring_job([*extra,
        "--bootstrap-servers", bootstrap, "--store-allow-list", store_url + "/",
        "--checkpoint-interval-ms", "1000", "--stats-interval-ms", "5000", "--job-name", "scoring demo",
        "--model-cache-dir", str(run_dir / "model-cache"),
        "--data-topic", topics.data, "--models-topic", topics.models, "--scores-topic", topics.scores,
        "--dead-letters-topic", topics.dead_letters, "--model-events-topic", topics.model_events,
    ])


def summary(watcher: Watcher, sent: list[str]) -> bool:
    missing = set(sent) - set(watcher.scored) - set(watcher.dead)
    print("\n=== summary ===")
    print(f"records in:      {len(sent)}")
    print(f"scored:          {len(watcher.scored)}")
    print(f"dead-lettered:   {len(watcher.dead)}")
    print(f"lost:            {len(missing)}")
    print(f"scored twice:    {watcher.duplicates}")
    print(f"{'model':<12}{'version':>8}{'records':>10}{'batches':>9}{'mean ms':>9}{'max ms':>9}")
    for (name, version), count in sorted(watcher.by_version.items()):
        s = watcher.latest_stats.get((name, version), {})
        print(f"{name:<12}{version:>8}{count:>10}{int(s.get('batches', 0)):>9}"
              f"{s.get('mean_ms', 0):>9.2f}{s.get('max_ms', 0):>9.2f}")
    return not missing and watcher.duplicates == 0


ANNOUNCING = ("publish", "rollback", "promote", "abort")


@dataclass
class Stack:
    bootstrap: str
    repo: ModelRepository
    store_url: str
    topics: TopicNames
    watcher: Watcher
    signing_key: Path

    def model_store(self, command: str, *args: str, signed: bool = True) -> None:
        """A `model-store` command, as a user types it; an announcement (a publish, rollback,
        promotion or abort) is signed unless told not to."""
        sign = ["--signing-key", str(self.signing_key)] if command in ANNOUNCING and signed else []
        code = cli.main(["--store-root", str(self.repo.root), "--bootstrap-servers", self.bootstrap, command,
                         *args, *sign, "--topic", self.topics.models, "--base-url", self.store_url])
        if code != 0:
            raise RuntimeError(f"model-store {command} {' '.join(args)} failed ({code})")


def start(stack: ExitStack, run_dir: Path, topics: TopicNames, extra_topics: dict[str, str] | None = None,
          job_args: tuple[str, ...] = ()) -> Stack:
    """Kafka, the model store, the Flink cluster and the job, each stopped by `stack` on exit."""
    # A broker of its own, with fresh topics: nothing left from other runs mixes in.
    broker = KafkaBroker(data_dir=run_dir / "kafka", port=free_port())
    say(f"starting Kafka on {broker.bootstrap_servers} ...")
    broker.start()
    stack.callback(lambda: (broker.stop(), say("Kafka stopped")))
    bootstrap = broker.bootstrap_servers
    create_job_topics(bootstrap, {**topics.by_role(), **(extra_topics or {})}, partitions=1)

    repo = ModelRepository(run_dir / "model-store")
    repo.root.mkdir(parents=True)
    store = stack.enter_context(ModelStoreServer(repo.root))
    say(f"model store serving {repo.root} at {store.base_url}")

    keys = run_dir / "keys"
    cli.main(["keygen", "--out", str(keys)])  # the job runs only models this key signed

    say("starting the Flink cluster ...")
    if flink_cluster.start():
        stack.callback(lambda: (flink_cluster.stop(), say("Flink cluster stopped")))
    job_id = submit_job(bootstrap, store.base_url, topics, run_dir, "--trusted-keys", str(keys / "public.pem"),
                        *job_args)
    stack.callback(lambda: flink_cluster.cancel_job(job_id))
    say(f"scoring job submitted: {job_id} (web UI http://127.0.0.1:{flink_cluster.REST_PORT})")

    watcher = Watcher(bootstrap, topics)
    watcher.start()
    stack.callback(watcher.stop.set)
    return Stack(bootstrap, repo, store.base_url, topics, watcher, keys / "private.pem")


def wait_until_done(watcher: Watcher, sent: list[str]) -> None:
    say(f"stopped sending after {len(sent)} records; waiting for the last results ...")
    deadline = time.monotonic() + 60
    while len(set(watcher.scored) | set(watcher.dead)) < len(set(sent)) and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(2)


def run_demo(run: Callable[[], bool], description: str) -> int:
    """`--help` prints the demo's description and starts nothing; the demo takes no flags."""
    argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups on `kill` too
    try:
        ok = run()
    except (RuntimeError, TimeoutError, OSError) as err:
        print(f"demo failed: {err}", file=sys.stderr)
        return 1
    print("demo finished: every record was scored or dead-lettered exactly once" if ok
          else "demo finished with lost or duplicated records", flush=True)
    return 0 if ok else 1


def wait_for(watcher: Watcher, state: int, data_type: str, version: int, reason: str = "",
             timeout_s: float = 120) -> pb.ModelEvent:
    """The first event of this kind (whose reason contains `reason`) the job reported."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for e in list(watcher.events):
            if (e.state, e.data_type, e.model_version) == (state, data_type, version) and reason in e.reason:
                return e
        time.sleep(0.5)
    raise TimeoutError(f"no {State.Name(state)} event for {data_type} v{version} in {timeout_s:.0f} s")
