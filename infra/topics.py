"""Kafka topics for tests, the demo and benchmarks: create them, name them, follow them.
Producing and reading is `model_store.kafka_io`."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Mapping

from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from contract.topics import MODELS_TOPIC_CONFIG
from infra.procs import wait_until
from model_store.kafka_config import client_config
from model_store.kafka_io import Kafka, committed_reader, consume


def create_topics(kafka: Kafka, names: Iterable[str], partitions: int = 1,
                  configs: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """Create the topics that do not exist yet; `configs` holds topic-level settings by name."""
    names, configs = list(names), configs or {}
    admin = KafkaAdminClient(**client_config(kafka).python_kwargs())
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, partitions, 1, topic_configs=dict(configs.get(n, {})))
               for n in names if n not in existing]
        if new:
            admin.create_topics(new)
        wait_until(lambda: set(names) <= set(admin.list_topics()), 30, f"topics {sorted(names)}")
    finally:
        admin.close()


def create_job_topics(kafka: Kafka, names: Mapping[str, str], partitions: int = 1,
                      models_config: Mapping[str, str] = MODELS_TOPIC_CONFIG) -> None:
    """The job's topics by role (`TopicNames` fields, or `data`, `models`, ...); the models
    topic compacted."""
    create_topics(kafka, names.values(), partitions, {names["models"]: models_config})


# For tests and faults: compaction as soon as the broker's log cleaner looks (every 15 s by
# default), segments closed after 1 s, and anything older than the newest message of its key
# may go at once.
EAGER_COMPACTION = {**MODELS_TOPIC_CONFIG, "segment.ms": "1000", "min.compaction.lag.ms": "0",
                    "min.cleanable.dirty.ratio": "0.01"}


def wait_until_compacted(bootstrap: str, topic: str, at_most: int, timeout_s: float = 120) -> int:
    """Until the log cleaner has left at most `at_most` messages in `topic`; how many it left.
    The active segment is never compacted: produce once more after `segment.ms` first."""
    left: list[bytes] = []

    def compacted() -> bool:
        left[:] = consume(bootstrap, topic, timeout_s=3, idle_s=0)
        return len(left) <= at_most

    try:
        wait_until(compacted, timeout_s, f"the log cleaner compacting {topic}", interval_s=2)
    except TimeoutError as err:
        raise TimeoutError(f"{topic} still holds {len(left)} messages, not {at_most}: {err}") from err
    return len(left)


def unique_topics(*roles: str) -> dict[str, str]:
    """Fresh topic names for one test run: role -> name."""
    tag = uuid.uuid4().hex[:8]
    return {role: f"{role}-{tag}" for role in roles}


class TopicTail(threading.Thread):
    """Reads topics from the beginning as records are committed (`read_committed`) and hands
    each value to `on_value(topic, value)`, on this thread, until `close()`.

    Survives a broker restart: the consumer reconnects by itself."""

    def __init__(self, bootstrap: str, topics: Iterable[str],
                 on_value: Callable[[str, bytes], None]) -> None:
        super().__init__(daemon=True, name="topic-tail")
        self._consumer = committed_reader(bootstrap, *topics)
        self._on_value = on_value
        self._stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                for tp, records in self._consumer.poll(timeout_ms=300).items():
                    for r in records:
                        self._on_value(tp.topic, r.value)
        finally:
            self._consumer.close()

    def close(self) -> None:
        self._stopping.set()
        self.join(timeout=30)
