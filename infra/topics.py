"""Produce to and read from Kafka topics with kafka-python (tests, demo, benchmarks)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from infra.procs import wait_until


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


def produce(bootstrap: str, topic: str, values: Iterable[bytes], key: bytes | None = None) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             batch_size=1 << 20, max_request_size=16 * 1024 * 1024)
    n = 0
    try:
        for value in values:
            producer.send(topic, value, key=key)
            n += 1
        producer.flush()
    finally:
        producer.close()
    return n


def committed_reader(bootstrap: str, *topics: str) -> KafkaConsumer:
    """A consumer of `topics` from their beginning, committed records only, no group."""
    return KafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        group_id=None,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )


def consume(
    bootstrap: str,
    topic: str,
    expected: int | None = None,
    timeout_s: float = 60,
    idle_s: float = 3,
) -> list[bytes]:
    """Read a topic from the beginning, committed records only (`read_committed`).

    Stops when `expected` values arrived (then waits `idle_s` more to catch extras),
    or when `timeout_s` passed.
    """
    consumer = committed_reader(bootstrap, topic)
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    extra_until: float | None = None
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                values.extend(r.value for r in records)
            if expected is not None and len(values) >= expected:
                extra_until = extra_until or time.monotonic() + idle_s
                if time.monotonic() >= extra_until:
                    break
    finally:
        consumer.close()
    return values


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
