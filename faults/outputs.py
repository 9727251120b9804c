"""What a job under test committed to its output topics, and the tally of what was sent to it.

Every input is followed to its outputs: a record by its id (a score or a dead letter),
bytes that are not a record by the bytes its dead letter keeps.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from contract import scoring_pb2 as pb
from contract.json_records import read_result
from infra.job_harness import ScoringSetup, describe
from infra.topics import TopicTail
from model_store.status import fold

SCORE, DEAD = "score", "dead"
EITHER = "either"  # scored, or dead-lettered with the expected reason: timing decides
KEPT_OF_OVERSIZE = 1024  # a dead letter keeps only the first KiB of an over-size record


def digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


@dataclass(frozen=True)
class Sent:
    """One input and what must become of it: scored, or dead-lettered with `reason` (or one of
    its `|`-separated choices) in the dead letter's reason."""

    key: str  # the record id, or the digest of the bytes its dead letter keeps
    expect: str = SCORE
    reason: str = ""
    by_bytes: bool = False


def records(ids: Iterable[str], expect: str = SCORE, reason: str = "") -> list[Sent]:
    return [Sent(i, expect, reason) for i in ids]


def raw(values: Iterable[bytes], max_record_bytes: int, reason: str = "") -> list[Sent]:
    """Bytes that must be dead-lettered; over-size ones are found by their first KiB."""
    return [Sent(digest(v if len(v) <= max_record_bytes else v[:KEPT_OF_OVERSIZE]), DEAD, reason, True)
            for v in values]


@dataclass
class Tally:
    sent: int = 0
    scored: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0  # scored when it should be dead-lettered, or the other way, or the wrong reason
    examples: list[str] = field(default_factory=list)  # a few of the unexpected ones

    def add_unexpected(self, what: str) -> None:
        self.unexpected += 1
        if len(self.examples) < 5:
            self.examples.append(what)


def _reason_fits(reason: str, expected: str) -> bool:
    """A non-empty reason that contains `expected` (or one of its `|`-separated choices)."""
    return bool(reason) and any(choice in reason for choice in expected.split("|"))


@dataclass(frozen=True)
class Score:
    record_id: str
    data_type: str
    model: str
    version: int


class JobOutputs:
    """Reads a job's scores, dead letters and model events as they are committed."""

    def __init__(self, setup: ScoringSetup) -> None:
        self.topics = setup.topics
        self._lock = threading.Lock()
        self._scores: dict[str, list[Score]] = defaultdict(list)
        self._score_log: list[Score] = []
        self._dead: dict[str, list[pb.DeadLetter]] = defaultdict(list)
        self._events: list[pb.ModelEvent] = []
        self._tail = TopicTail(
            setup.bootstrap,
            [self.topics["scores"], self.topics["dead-letters"], self.topics["model-events"]],
            self._take)
        self._tail.start()

    def close(self) -> None:
        self._tail.close()

    def _take(self, topic: str, value: bytes) -> None:
        with self._lock:
            if topic == self.topics["scores"]:
                r = read_result(value)
                score = Score(r.record_id, r.data_type, r.model_name, r.model_version)
                self._scores[r.record_id].append(score)
                self._score_log.append(score)
            elif topic == self.topics["dead-letters"]:
                d = pb.DeadLetter.FromString(value)
                self._dead["id:" + d.record_id].append(d)
                self._dead["bytes:" + digest(d.original)].append(d)
            else:
                self._events.append(pb.ModelEvent.FromString(value))

    # ---- records --------------------------------------------------------------------------
    def _outcome(self, item: Sent) -> tuple[list[Score], list[pb.DeadLetter]]:
        if item.by_bytes:
            return [], self._dead.get("bytes:" + item.key, [])
        return self._scores.get(item.key, []), self._dead.get("id:" + item.key, [])

    def tally(self, items: Iterable[Sent]) -> Tally:
        t = Tally()
        with self._lock:
            for item in items:
                scores, dead = self._outcome(item)
                t.sent += 1
                t.scored += bool(scores)
                t.dead_lettered += bool(dead)
                t.lost += not scores and not dead
                t.duplicated += max(0, len(scores) + len(dead) - 1)
                if scores and item.expect == DEAD:
                    t.add_unexpected(f"{item.key[:40]} was scored by {scores[0].model} v{scores[0].version}")
                elif dead and item.expect == SCORE:
                    t.add_unexpected(f"{item.key[:40]} was dead-lettered: {dead[0].stage}: {dead[0].reason[:160]}")
                elif dead and not all(_reason_fits(d.reason, item.reason) for d in dead):
                    t.add_unexpected(f"{item.key[:40]} dead-lettered with reason {dead[0].reason[:160]!r}, "
                                     f"expected one with {item.reason!r}")
        return t

    def missing(self, items: Iterable[Sent]) -> int:
        with self._lock:
            return sum(1 for item in items if not any(self._outcome(item)))

    def wait_accounted(self, items: list[Sent], timeout_s: float, settle_s: float = 3) -> int:
        """Wait until every item has an outcome (then `settle_s` more for late duplicates);
        returns how many have none."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.missing(items):
            time.sleep(0.5)
        time.sleep(settle_s)
        return self.missing(items)

    def scores_of(self, ids: Iterable[str]) -> list[Score]:
        """The scores of these records, in the order the job wrote them."""
        wanted = set(ids)
        with self._lock:
            return [s for s in self._score_log if s.record_id in wanted]

    def dead_letters_of(self, item: Sent) -> list[pb.DeadLetter]:
        with self._lock:
            return list(self._outcome(item)[1])

    # ---- model events -----------------------------------------------------------------------
    def events(self, match: Callable[[pb.ModelEvent], bool] = lambda e: True) -> list[pb.ModelEvent]:
        with self._lock:
            return [e for e in self._events if match(e)]

    def wait_event(self, match: Callable[[pb.ModelEvent], bool], what: str,
                   timeout_s: float = 120) -> pb.ModelEvent:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.events(match)
            if found:
                return found[0]
            time.sleep(0.3)
        recent = [describe(e) for e in self.events()[-8:]]
        raise TimeoutError(f"no model event {what} in {timeout_s:.0f}s; latest: {recent}")

    def serving(self) -> dict[str, str]:
        """Per data type, the model it is served by, as the model events tell."""
        return {t: f"{s.model} v{s.version}" for t, s in fold(self.events()).items() if s.model}


def is_event(state: int, data_type: str = "", version: int = 0,
             reason: str = "") -> Callable[[pb.ModelEvent], bool]:
    """A matcher for `events`/`wait_event`; empty arguments match anything."""
    def match(e: pb.ModelEvent) -> bool:
        return (e.state == state and (not data_type or e.data_type == data_type)
                and (not version or e.model_version == version) and reason in e.reason)
    return match
