"""A steady stream of good records to the jobs under test while a case disrupts something."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from kafka import KafkaProducer

from contract.values import make_record


@dataclass
class Section:
    """The records one case streamed: their ids, and per topic the sends that failed."""

    label: str
    ids: list[str] = field(default_factory=list)
    _pending: list[tuple[str, str, object]] = field(default_factory=list)
    failed: dict[str, set[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ids_so_far(self) -> list[str]:
        with self._lock:
            return list(self.ids)

    def confirmed(self, topic: str) -> list[str]:
        """The ids the broker acknowledged on `topic` (failed sends cannot count as lost)."""
        failed = self.failed.get(topic, set())
        return [i for i in self.ids if i not in failed]

    def _settle(self) -> None:
        for record_id, topic, future in self._pending:
            if not future.succeeded():
                self.failed.setdefault(topic, set()).add(record_id)
        self._pending.clear()


class RecordStream:
    """Sends `per_tick` records of each data type every `tick_s` to every data topic, with
    inputs taken in turn from `rows`.

    The producer is idempotent with a long delivery timeout, so a broker restart delays
    sends without losing or doubling them; ids are never reused."""

    def __init__(self, bootstrap: str, topics: list[str], rows: list[dict],
                 per_tick: int = 5, tick_s: float = 0.1) -> None:
        self.topics = topics
        self.rows = rows
        self.per_tick = per_tick
        self.tick_s = tick_s
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=10,
            delivery_timeout_ms=300_000, request_timeout_ms=30_000, max_block_ms=300_000)

    def close(self) -> None:
        self._producer.close(timeout=30)

    @contextmanager
    def section(self, label: str, data_types: list[str],
                topics: list[str] | None = None) -> Iterator[Section]:
        """Streams records of `data_types` with ids `<label>-<n>` to `topics` (default: every
        job's) until the block ends."""
        section = Section(label)
        stop = threading.Event()
        thread = threading.Thread(target=self._run, args=(section, data_types, topics or self.topics, stop),
                                  daemon=True, name=f"stream-{label}")
        thread.start()
        try:
            yield section
        finally:
            stop.set()
            thread.join(timeout=60)
            self._producer.flush(timeout=300)
            section._settle()

    def _run(self, section: Section, data_types: list[str], topics: list[str],
             stop: threading.Event) -> None:
        counter = itertools.count()
        rows = itertools.cycle(self.rows)
        while not stop.is_set():
            started = time.monotonic()
            now_ms = int(time.time() * 1000)
            batch = [make_record(f"{section.label}-{next(counter)}", t, next(rows), now_ms)
                     for t in data_types for _ in range(self.per_tick)]
            sends = [(r.record_id, topic, self._producer.send(topic, r.SerializeToString()))
                     for r in batch for topic in topics]
            with section._lock:
                section.ids.extend(r.record_id for r in batch)
                section._pending.extend(sends)
            stop.wait(max(0.0, self.tick_s - (time.monotonic() - started)))
