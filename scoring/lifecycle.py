"""One data type's models as a plain state machine: the descriptor it is served by (`current`),
the one being loaded to replace it (`next`), and when the one replaces the other.

No PyFlink and no clock here. The Flink function tells it what happened (a descriptor was
accepted for the data type; where the next model's load stands) and carries out what it
answers: a small record of what changed, which it writes to keyed state and reports as a
model event (TF Serving's names: LOADING when a descriptor is taken up, AVAILABLE when it is
swapped in, UNLOADED for the one it replaced). A model that failed to load while another one
served is given up, and not taken up again until a new descriptor is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract import scoring_pb2 as pb
from scoring.loader import Servable
from scoring.manager import ERROR, READY, LoadStatus
from scoring.policy import descriptor_id

Descriptor = pb.ModelDescriptor


@dataclass
class KeyModels:
    """What one data type remembers of its models (the Flink function keeps it in keyed state)."""

    current: Descriptor | None = None
    next: Descriptor | None = None
    failed_id: str = ""  # the descriptor given up on while `current` served


@dataclass(frozen=True)
class TakenUp:
    """`descriptor` is now the next model: load it (first, if nothing serves yet)."""

    descriptor: Descriptor
    urgent: bool


@dataclass(frozen=True)
class Swapped:
    """`new` serves from now on; `old` (None for a first model) no longer does."""

    old: Descriptor | None
    new: Descriptor
    servable: Servable

    @property
    def unloads_old(self) -> bool:
        return self.old is not None and (self.old.name, self.old.version) != (self.new.name, self.new.version)


@dataclass(frozen=True)
class GaveUp:
    """`descriptor` failed to load; `current` serves on."""

    descriptor: Descriptor
    error: str


def id_of(d: Descriptor) -> str:
    return str(descriptor_id(d))


def label(d: Descriptor | None) -> str:
    return f"{d.name} v{d.version}" if d is not None else "no model"


def take_up(km: KeyModels, accepted: Descriptor | None) -> TakenUp | None:
    """The descriptor accepted for this data type becomes its next model, unless it already
    is the current or next one, or was given up on."""
    seen = {id_of(d) for d in (km.current, km.next) if d is not None} | {km.failed_id}
    if accepted is None or id_of(accepted) in seen:
        return None
    km.next = accepted
    return TakenUp(accepted, urgent=km.current is None)


def settle(km: KeyModels, next_status: LoadStatus) -> Swapped | GaveUp | None:
    """Where the next model's load stands decides: READY swaps it in; ERROR while a current
    model serves gives it up; anything else waits (a data type with no other model keeps
    its failed next one: the manager retries it)."""
    if km.next is None:
        return None
    if next_status.state == READY:
        old, km.current, km.next = km.current, km.next, None
        return Swapped(old, km.current, next_status.servable)
    if next_status.state == ERROR and km.current is not None:
        given_up, km.next = km.next, None
        km.failed_id = id_of(given_up)
        return GaveUp(given_up, next_status.error)
    return None


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


def scores_at_once(held: int, last_record_s: float, now_s: float, batch_wait_s: float) -> bool:
    """A record after a quiet spell longer than the batch wait is scored at once: waiting would
    add latency without filling a batch (many sparse data types)."""
    return held == 0 and now_s - last_record_s > batch_wait_s
