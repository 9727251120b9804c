"""One data type's models as a plain state machine: the descriptor it is served by (`current`),
the one being loaded to replace it (`next`), and when the one replaces the other.

No PyFlink and no clock here. The Flink function tells it what happened (a descriptor was
accepted for the data type; where the next model's load stands) and carries out what it
answers: a small record of what changed, which it writes to keyed state and reports as a
model event (TF Serving's names: LOADING when a descriptor is taken up, AVAILABLE when it is
swapped in, UNLOADED for the one it replaced). A model that failed to load while another one
served is given up, and not taken up again until a new descriptor is accepted.

A descriptor with a SHADOW or CANARY policy does not swap in when READY: it starts a rollout
(`scoring.rollout`), which the gate ends in a promotion (the swap) or ABANDONED. A promoted
model may be watched; one that fails its watch is rolled back to the model it replaced.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract import scoring_pb2 as pb
from contract.rollout import in_rollout
from scoring.loader import Servable
from scoring.manager import ERROR, READY, LoadStatus
from scoring.policy import descriptor_id
from scoring.rollout import (
    FAILED,
    PASSED,
    Progress,
    Watch,
    judge,
    watch_after_promotion,
)

Descriptor = pb.ModelDescriptor


@dataclass
class KeyModels:
    """What one data type remembers of its models (the Flink function keeps it in keyed state)."""

    current: Descriptor | None = None
    next: Descriptor | None = None
    failed_id: str = ""  # the descriptor given up on while `current` served
    rollout: Progress | None = None  # the next model's rollout, when it has one
    watch: Watch | None = None  # the current model's watch after its promotion
    previous: Descriptor | None = None  # what a watch rolls back to


@dataclass(frozen=True)
class TakenUp:
    """`descriptor` is now the next model: load it (first, if nothing serves yet). A PROMOTE
    of the candidate in rollout only marks it (`promotion`); a candidate replaced before its
    rollout ended is `superseded`."""

    descriptor: Descriptor
    urgent: bool
    promotion: bool = False
    superseded: Descriptor | None = None


@dataclass(frozen=True)
class Swapped:
    """`new` serves from now on; `old` (None for a first model) no longer does. `promoted`:
    why, when a rollout ended in the swap."""

    old: Descriptor | None
    new: Descriptor
    servable: Servable
    promoted: str = ""
    progress: Progress | None = None  # the rollout's final numbers, when it was promoted

    @property
    def unloads_old(self) -> bool:
        return self.old is not None and (self.old.name, self.old.version) != (self.new.name, self.new.version)


@dataclass(frozen=True)
class GaveUp:
    """`descriptor` failed to load; `current` serves on."""

    descriptor: Descriptor
    error: str


@dataclass(frozen=True)
class RolloutStarted:
    """The candidate is READY and scores beside the current model from now on."""

    descriptor: Descriptor


@dataclass(frozen=True)
class GatePassed:
    """The gate passed; the candidate waits for a PROMOTE (manual promotion)."""

    descriptor: Descriptor
    reason: str


@dataclass(frozen=True)
class Abandoned:
    """The gate failed: the candidate is dropped and `current` serves on."""

    descriptor: Descriptor
    reason: str
    progress: Progress


@dataclass(frozen=True)
class RollingBack:
    """The promoted `failed` model failed its watch; `to`, the model it replaced, is next."""

    failed: Descriptor
    to: Descriptor
    reason: str


def id_of(d: Descriptor) -> str:
    return str(descriptor_id(d))


def label(d: Descriptor | None) -> str:
    return f"{d.name} v{d.version}" if d is not None else "no model"


def take_up(km: KeyModels, accepted: Descriptor | None) -> TakenUp | None:
    """The descriptor accepted for this data type becomes its next model, unless it already
    is the current or next one, or was given up on."""
    if accepted is None or _seen(km, accepted):
        return None
    if (accepted.action == Descriptor.PROMOTE and km.rollout is not None
            and (accepted.name, accepted.version) == (km.next.name, km.next.version)):
        promoted = Descriptor()
        promoted.CopyFrom(accepted)
        promoted.rollout.CopyFrom(km.next.rollout)  # its gate's watch still applies
        km.next, km.rollout.promote = promoted, True
        return TakenUp(promoted, urgent=False, promotion=True)
    superseded = km.next if km.rollout is not None else None
    km.next = accepted
    km.rollout = Progress() if km.current is not None and in_rollout(accepted) else None
    return TakenUp(accepted, urgent=km.current is None, superseded=superseded)


def _seen(km: KeyModels, d: Descriptor) -> bool:
    """`d` is the current or next model, or was given up on. (Runs for every record: tuples
    are compared; the string id only when something was given up on.)"""
    announced = descriptor_id(d)
    return any(m is not None and descriptor_id(m) == announced for m in (km.current, km.next)) or (
        bool(km.failed_id) and id_of(d) == km.failed_id)


Change = Swapped | GaveUp | RolloutStarted | GatePassed | Abandoned


def settle(km: KeyModels, next_status: LoadStatus, now_ms: int) -> Change | None:
    """Where the next model's load stands decides: READY swaps it in, or starts or judges its
    rollout; ERROR while a current model serves gives it up; anything else waits (a data
    type with no other model keeps its failed next one: the manager retries it)."""
    if km.next is None:
        return None
    if next_status.state == ERROR and km.current is not None:
        given_up, km.next, km.rollout = km.next, None, None
        km.failed_id = id_of(given_up)
        return GaveUp(given_up, next_status.error)
    if next_status.state != READY:
        return None
    r, gate = km.rollout, km.next.rollout.gate
    if r is None:
        return _swap(km, next_status.servable, now_ms)
    if r.started_ms < 0:
        r.started_ms = now_ms
        return RolloutStarted(km.next)
    if r.promote:
        return _swap(km, next_status.servable, now_ms, "promoted by a person (PROMOTE)")
    verdict = judge(gate, r, now_ms)
    if verdict.outcome == FAILED:
        abandoned, km.next, km.rollout = km.next, None, None
        km.failed_id = id_of(abandoned)
        return Abandoned(abandoned, verdict.reason, r)
    if verdict.outcome == PASSED and not gate.manual_promotion:
        return _swap(km, next_status.servable, now_ms, verdict.reason)
    if verdict.outcome == PASSED and not r.passed_ms:
        r.passed_ms = now_ms
        return GatePassed(km.next, verdict.reason)
    return None


def _swap(km: KeyModels, servable: Servable, now_ms: int, promoted: str = "") -> Swapped:
    """The next model serves; a deployed one (not a rollback) is watched if its gate asks."""
    old, new, progress = km.current, km.next, km.rollout
    km.current, km.next, km.rollout = new, None, None
    rolled_back = old is not None and id_of(old) == km.failed_id  # see review_watch
    watched = old is not None and new.action != Descriptor.ROLLBACK and not rolled_back
    km.watch = watch_after_promotion(new.rollout.gate, now_ms) if watched else None
    km.previous = old if km.watch is not None else None
    return Swapped(old, new, servable, promoted, progress)


def review_watch(km: KeyModels, now_ms: int) -> RollingBack | None:
    """A promoted model that fails its watch window goes back to the model it replaced; one
    that lasts the window keeps serving."""
    w = km.watch
    if w is None:
        return None
    reason = w.failing()
    if not reason and now_ms < w.until_ms:
        return None
    failed, to = km.current, km.previous
    km.watch, km.previous = None, None
    if not reason or to is None:
        return None
    km.failed_id, km.next, km.rollout = id_of(failed), to, None
    return RollingBack(failed, to, reason)


def unservable_reason(km: KeyModels, next_status: LoadStatus | None, retry_after_s: float) -> str:
    """Why no model will serve this data type soon, or "" when one is serving or loading."""
    if km.current is not None:
        return ""
    if km.next is None:
        return "no model has been published for this data type"
    if next_status is not None and next_status.state == ERROR:
        return (f"its only model, {label(km.next)}, failed to load ({next_status.error}); "
                f"the load is retried every {retry_after_s:.0f}s")
    return ""


@dataclass(frozen=True)
class HoldLimits:
    """How much the job keeps of records that no model can score yet (--max-held-records,
    --max-held-total, --hold-unpublished-ms): whoever writes the data topic decides the data
    types, and state must not grow with them."""

    per_key: int
    total: int
    unpublished_ms: int  # records of a data type with no descriptor: held this long at most


def hold_refusal(held: int, published: bool, held_total: int, waited_ms: float, limits: HoldLimits,
                 incoming: int = 1) -> str:
    """Why `incoming` records (one, or a batch of columns) that no model can score now are not
    held ("" when they are). A data type with
    no accepted descriptor is held only briefly (`waited_ms`: since its first held record), for
    a descriptor published just before its records may arrive just after them; and caps."""
    if not published and waited_ms >= limits.unpublished_ms:
        return (f"no model has been published for this data type (its records waited "
                f"{limits.unpublished_ms / 1000:g}s for one, --hold-unpublished-ms). Publish a model "
                "for it, then send its records again")
    if held + incoming > limits.per_key:
        return f"no model is ready for this data type and {held} records are already held (--max-held-records)"
    if held_total + incoming > limits.total:
        return (f"no model is ready for this data type and this subtask already holds {held_total} records "
                "of data types without one (--max-held-total)")
    return ""


def next_poll_ms(previous_ms: int, first_ms: int, max_ms: int) -> int:
    """The wait before looking again for a model for held records: doubles while none comes."""
    return first_ms if previous_ms <= 0 else min(previous_ms * 2, max_ms)


def scores_at_once(held: int, last_record_s: float, now_s: float, batch_wait_s: float) -> bool:
    """A record after a quiet spell longer than the batch wait is scored at once: waiting would
    add latency without filling a batch (many sparse data types)."""
    return held == 0 and now_s - last_record_s > batch_wait_s
