"""Kafka topics for tests, the demo and benchmarks: create them, name them, follow them.
Producing and reading is `model_store.kafka_io`."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable

from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from infra.procs import wait_until
from model_store.kafka_io import committed_reader


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1) -> None:
    names = list(names)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if new:
            admin.create_topics(new)
        wait_until(lambda: set(names) <= set(admin.list_topics()), 30, f"topics {sorted(names)}")
    finally:
        admin.close()


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
