"""Rollouts judged on predictions: a candidate model scores the same live records as the
current one, and a gate decides on what the two predicted.

Plain data and pure functions: no PyFlink, no clock (every `now_ms` is a parameter). The
gate is the `Gate` carried in the candidate's descriptor; what the rollout has seen so far
is a `Progress`, and after a promotion a `Watch`: both are small JSON-able records the Flink
function keeps in keyed state, so a restart continues the rollout where it stood.

A verdict takes the worst of its checks, as Argo Rollouts does: one failed check fails the
gate (ABANDONED, naming the numbers), and nothing passes before `min_records`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from contract import scoring_pb2 as pb
from contract.rollout import min_records
from scoring.batch import Outcome

Mode = pb.RolloutPolicy.Mode
WATCH_MIN_RECORDS = 100  # a watch window judges an error rate only over at least this many records
BUCKETS_PER_OCTAVE = 4  # latency histogram resolution: 2^(1/4), about 19%
PENDING, PASSED, FAILED = "PENDING", "PASSED", "FAILED"


# ---- which records take part ---------------------------------------------------------------
def share_of(key: str, salt: str) -> float:
    """A stable place in [0, 1) for `key`: the same in every process and after every restart
    (Python's hash() is salted per process, so two workers would disagree)."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 / 10_000


def takes_part(policy: pb.RolloutPolicy, salt: str, record_id: str, inputs: Mapping[str, Any]) -> bool:
    """SHADOW: the record is in the sample. CANARY: its entity is in the canary's share; a
    record without the entity field stays with the current model."""
    if policy.mode == pb.RolloutPolicy.SHADOW:
        return policy.sample in (0, 1) or share_of(record_id, salt) < policy.sample
    entity = record_id if not policy.entity_field else inputs.get(policy.entity_field)
    return entity is not None and share_of(str(entity), salt) < policy.canary_percent / 100


# ---- comparing two models' outputs ----------------------------------------------------------
def agrees(current: Any, candidate: Any, tolerance: float) -> bool:
    """Class outputs (text, integers, booleans) agree when equal; numbers when within the
    tolerance; a vector of scores when its argmax is the same."""
    if isinstance(current, (str, bytes, bool, np.bool_)) or isinstance(candidate, (str, bytes)):
        return current == candidate
    a, b = np.asarray(current), np.asarray(candidate)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "iub" and b.dtype.kind in "iub":
        return bool(np.array_equal(a, b))
    if a.size > 1:
        return int(np.argmax(a)) == int(np.argmax(b))
    return bool(np.all(np.abs(a.astype(np.float64) - b.astype(np.float64)) <= tolerance))


def disagreeing(current: Mapping[str, Any], candidate: Mapping[str, Any], tolerance: float) -> list[str]:
    return sorted(name for name, value in current.items()
                  if name not in candidate or not agrees(value, candidate[name], tolerance))


# ---- what a rollout has seen ------------------------------------------------------------------
def _bucket(us: float) -> str:
    return str(round(math.log2(max(us, 0.01)) * BUCKETS_PER_OCTAVE))


def p99(histogram: Mapping[str, int]) -> float:
    """The 99th percentile of a latency histogram, in microseconds (the bucket's value)."""
    total = sum(histogram.values())
    if not total:
        return 0.0
    seen = 0
    for bucket in sorted(histogram, key=int):
        seen += histogram[bucket]
        if seen >= 0.99 * total:
            return 2 ** (int(bucket) / BUCKETS_PER_OCTAVE)
    return 0.0  # unreachable


@dataclass
class Progress:
    """A rollout of the key's next model: counters since it started scoring beside the current."""

    started_ms: int = -1  # -1: the candidate is not READY yet
    records: int = 0  # given to the candidate
    compared: int = 0  # scored by both
    candidate_failed: int = 0
    current_failed: int = 0  # of the same records
    agreed: dict[str, int] = field(default_factory=dict)  # per output of the current model
    latency_current: dict[str, int] = field(default_factory=dict)  # µs per record, per batch
    latency_candidate: dict[str, int] = field(default_factory=dict)
    passed_ms: int = 0  # manual promotion: when the gate passed
    promote: bool = False  # a person asked (PROMOTE)

    def add(self, current: Sequence[Outcome], candidate: Sequence[Outcome], tolerance: float,
            us_current: float, us_candidate: float) -> list[list[str] | None]:
        """Count one batch both models scored; returns the disagreeing outputs per record
        (None where either model failed)."""
        found: list[list[str] | None] = []
        for mine, theirs in zip(current, candidate, strict=True):
            self.records += 1
            self.candidate_failed += not theirs.ok
            self.current_failed += not mine.ok
            if not (mine.ok and theirs.ok):
                found.append(None)
                continue
            self.compared += 1
            differ = disagreeing(mine.outputs, theirs.outputs, tolerance)
            for name in mine.outputs:
                self.agreed[name] = self.agreed.get(name, 0) + (name not in differ)
            found.append(differ)
        if current:
            for histogram, us in ((self.latency_current, us_current), (self.latency_candidate, us_candidate)):
                b = _bucket(us)
                histogram[b] = histogram.get(b, 0) + 1
        return found

    def agreement(self) -> dict[str, float]:
        return {name: n / self.compared for name, n in self.agreed.items()} if self.compared else {}

    def error_rate(self) -> float:
        return self.candidate_failed / self.records if self.records else 0.0

    def latency_ratio(self) -> float:
        current = p99(self.latency_current)
        return p99(self.latency_candidate) / current if current else 0.0

    def as_stats(self, now_ms: int) -> dict[str, float]:
        """The numbers of a SHADOW_STATS event."""
        stats = {"records": self.records, "compared": self.compared, "candidate_failed": self.candidate_failed,
                 "current_failed": self.current_failed, "error_rate": self.error_rate(),
                 "p99_us_current": p99(self.latency_current), "p99_us_candidate": p99(self.latency_candidate),
                 "latency_ratio": self.latency_ratio(), "elapsed_ms": now_ms - self.started_ms}
        stats.update({f"agreement.{name}": share for name, share in self.agreement().items()})
        return {k: float(v) for k, v in stats.items()}


@dataclass(frozen=True)
class Verdict:
    outcome: str  # PENDING, PASSED or FAILED
    reason: str = ""


def judge(gate: pb.Gate, p: Progress, now_ms: int) -> Verdict:
    """The gate's verdict on the rollout so far (pure: the same numbers give the same verdict)."""
    if p.passed_ms:
        return Verdict(PASSED, "the gate passed earlier")
    need = min_records(gate)
    elapsed_ms = now_ms - p.started_ms
    if p.records < need:
        if gate.max_duration_ms and elapsed_ms >= gate.max_duration_ms:
            return Verdict(FAILED, f"only {p.records:,} of {need:,} records in {elapsed_ms / 1000:.0f} s "
                                   f"(max duration {gate.max_duration_ms / 1000:g} s)")
        return Verdict(PENDING)
    failed, passed = [], [f"{p.records:,} records"]
    if gate.min_agreement:
        shares = p.agreement()
        if not shares:
            failed.append("no record was scored by both models")
        for name, share in sorted(shares.items()):
            (failed if share < gate.min_agreement else passed).append(
                f"agreement on '{name}' {share:.3f} {'<' if share < gate.min_agreement else '>='} "
                f"{gate.min_agreement:g}")
    if gate.max_error_rate:
        rate = p.error_rate()
        (failed if rate > gate.max_error_rate else passed).append(
            f"error rate {rate:.3f} {'>' if rate > gate.max_error_rate else '<='} {gate.max_error_rate:g}")
    if gate.max_latency_ratio:
        ratio = p.latency_ratio()
        (failed if ratio > gate.max_latency_ratio else passed).append(
            f"p99 latency ratio {ratio:.2f} {'>' if ratio > gate.max_latency_ratio else '<='} "
            f"{gate.max_latency_ratio:g}")
    if failed:
        return Verdict(FAILED, f"{'; '.join(failed)} after {p.records:,} records")
    return Verdict(PASSED, "; ".join(passed))


@dataclass
class Watch:
    """After a promotion: the promoted model's failures during its watch window."""

    until_ms: int
    max_error_rate: float
    scored: int = 0
    failed: int = 0

    def add(self, scored: int, failed: int) -> None:
        self.scored += scored
        self.failed += failed

    def failing(self) -> str:
        """Why the promoted model should be rolled back, or ""."""
        total = self.scored + self.failed
        if total < WATCH_MIN_RECORDS or self.failed / total <= self.max_error_rate:
            return ""
        return (f"it failed {self.failed:,} of {total:,} records ({self.failed / total:.3f} > "
                f"{self.max_error_rate:g}) within its watch window")


def watch_after_promotion(gate: pb.Gate, now_ms: int) -> Watch | None:
    if not (gate.watch_ms and gate.max_error_rate):
        return None
    return Watch(until_ms=now_ms + gate.watch_ms, max_error_rate=gate.max_error_rate)


# ---- in and out of keyed state -------------------------------------------------------------------
def to_json(progress: Progress | None, watch: Watch | None) -> dict:
    return {"progress": asdict(progress) if progress else None, "watch": asdict(watch) if watch else None}


def from_json(doc: Mapping) -> tuple[Progress | None, Watch | None]:
    progress, watch = doc.get("progress"), doc.get("watch")
    return (Progress(**progress) if progress else None, Watch(**watch) if watch else None)
