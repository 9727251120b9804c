"""The scoring function's part both paths share (`ScoreModels`), a KeyedBroadcastProcessFunction.

Broadcast state keeps the latest accepted descriptor per data type; keyed state keeps the
key's current and next model descriptors, its held records, and the progress of a rollout
(`scoring.rollout`). Models load on a background thread (`ModelManager`); the swap current <-
next happens in `process_element`/`on_timer`, on the operator thread, between two elements.
What to decide is the PyFlink-free `scoring` package's (`scoring.lifecycle`, `scoring.policy`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pyflink.common import Types
from pyflink.datastream import (
    KeyedBroadcastProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import (
    ListStateDescriptor,
    ValueStateDescriptor,
)

from contract import scoring_pb2 as pb
from contract import signing
from contract.rollout import describe_policy
from jobs.operators import (
    MODEL_EVENTS,
    Event,
    FlinkMetrics,
    accepted_models,
    state_bytes,
    subtask_index,
)
from model_store.fetcher import (
    ArtifactFetcher,
    FetchError,
    FetchPolicy,
    default_cache_dir,
    private_directory,
)
from scoring import messages
from scoring.lifecycle import (
    Abandoned,
    GatePassed,
    GaveUp,
    HoldLimits,
    KeyModels,
    RolloutStarted,
    Swapped,
    TakenUp,
    hold_refusal,
    label,
    next_poll_ms,
    review_watch,
    settle,
    take_up,
    unservable_reason,
)
from scoring.loader import Servable, load_servable
from scoring.manager import READY, ModelManager
from scoring.options import ScoringOptions
from scoring.poison import CrashJournal, LoadJournal
from scoring.policy import accept, over_capacity
from scoring.rollout import from_json, to_json
from scoring.stats import ModelStats, OperatorTotals

log = logging.getLogger(__name__)


@dataclass
class KeyState(KeyModels):
    """In-memory mirror of one key's state (the truth is in Flink keyed state), with what the
    operator counts for it."""

    held: int = 0  # records in the key's buffer (a ListState): counted here, not in state
    unserved: int = 0  # of them, those held while no model served (in ScoreModels.held_total)
    # The record path's: the buffer's records as parsed on arrival, while this process has seen
    # all of them (not the ones held while no model was ready, nor those restored with the key).
    batch: list[tuple] = field(default_factory=list)
    last_record_s: float = 0.0  # time.monotonic() of the key's last record (the record path's)
    last_stats_ms: int = field(default_factory=messages.now_ms)
    unreported: bool = False  # scored since the last STATS event
    stats_timer_ms: int = 0  # when the timer that reports them fires
    poll_timer_ms: int = 0  # when the timer that looks for a model for the held records fires
    poll_delay_ms: int = 0  # how long it waited last: doubles while no model comes
    unpublished_since_s: float = 0.0  # time.monotonic() of the first record held with no descriptor


class ScoreModels(KeyedBroadcastProcessFunction):
    """What both paths keep per operator and per key: broadcast descriptors, the current and
    next model in keyed state, their loads and swap, rollouts and watches, held records' limits
    and timers, stats. A path (ScoreRecords, ScoreBatches) adds `process_element` and what it
    holds in the key's buffer: `_flush`, `_release_unpublished`, `_restored_held`."""

    def __init__(self, options: ScoringOptions, execution_mode: str = "process") -> None:
        self.options = options
        self.execution_mode = execution_mode

    # ---- set-up -------------------------------------------------------------------
    def open(self, runtime_context: RuntimeContext) -> None:
        o = self.options
        self.subtask = subtask_index(runtime_context)
        as_bytes = state_bytes(self.execution_mode)
        self.accepted_models = accepted_models(self.execution_mode)
        self.current_state = runtime_context.get_state(ValueStateDescriptor("current-model", as_bytes))
        self.next_state = runtime_context.get_state(ValueStateDescriptor("next-model", as_bytes))
        self.failed_state = runtime_context.get_state(ValueStateDescriptor("failed-model", Types.STRING()))
        self.rollout_state = runtime_context.get_state(ValueStateDescriptor("rollout", Types.STRING()))
        self.previous_state = runtime_context.get_state(ValueStateDescriptor("previous-model", as_bytes))
        self.buffer = runtime_context.get_list_state(ListStateDescriptor("buffered-records", as_bytes))
        fetcher = ArtifactFetcher(
            Path(o.model_cache_dir),
            FetchPolicy.parse(o.store_allow_list, max_bytes=o.max_artifact_bytes),
        )
        trust = signing.load_trust(o.trusted_keys, o.revoked)  # checked again at load: keys change across restarts
        self.sequenced = trust.required
        allowed = {data_type: frozenset(ops) for data_type, ops in o.allowed_model_ops}
        load = partial(load_servable, fetcher=fetcher, trust=trust, allowed_ops=allowed)
        self.journal, load_journal = self._crash_journals()
        self.manager = ModelManager(load, o.model_cache_size, o.load_retry_s, journal=load_journal)
        self.accepted: dict[str, pb.ModelDescriptor] | None = None  # mirror of broadcast state
        self.keys: dict[str, KeyState] = {}
        self.limits = HoldLimits(o.max_held_records, o.max_held_total, o.hold_unpublished_ms)
        self.held_total = 0  # records this subtask holds for keys no model serves
        self.stats: dict[tuple[str, int], ModelStats] = {}
        # Operator-wide metrics only: per-version numbers go out in STATS/UNLOADED model events.
        # Flink metrics cannot be unregistered, and Beam reports every one at every bundle end
        # (9% of the worker's time with 1,000 models, measured), so one per version would leak.
        self.totals = OperatorTotals()
        self.metrics = FlinkMetrics(runtime_context.get_metrics_group().add_group("scoring"), self.totals,
                                    self.execution_mode)

    def _crash_journals(self) -> tuple[CrashJournal, LoadJournal]:
        """The subtask's journals of the records being scored and of the model loads running
        (scoring.poison): `<cache>/.journal/<group id>-<subtask>.json` and `....loads.json`."""
        o = self.options
        try:
            directory = private_directory(Path(o.model_cache_dir or default_cache_dir())) / ".journal"
            name = f"{o.journal_name}-{self.subtask}"
            return (CrashJournal(directory / f"{name}.json", o.max_record_crashes),
                    LoadJournal(directory / f"{name}.loads.json", o.max_load_crashes))
        except (FetchError, OSError) as err:  # the fetches will say so too: no reason to fail the task
            log.warning("no crash journals (records and model loads that kill the worker are not counted): %s",
                        err)
            return CrashJournal(None, o.max_record_crashes), LoadJournal(None, o.max_load_crashes)

    def close(self) -> None:
        self.manager.close()  # and its load journal
        self.journal.close()

    # ---- model updates (broadcast side) --------------------------------------------
    def process_broadcast_element(self, value: bytes, ctx):
        descriptor = pb.ModelDescriptor.FromString(value)
        self._mirror(ctx)
        yield from self._collect_loads()
        reason = (accept(self.accepted.get(descriptor.data_type), descriptor, self.sequenced)
                  or over_capacity(self.accepted, descriptor, self.options.max_data_types,
                                   self.options.max_inline_total_bytes))
        if reason:
            yield from self._report(Event.REJECTED, descriptor, reason=reason)
            return
        ctx.get_broadcast_state(self.accepted_models).put(descriptor.data_type, value)
        self.accepted[descriptor.data_type] = descriptor
        action = pb.ModelDescriptor.Action.Name(descriptor.action)
        yield from self._report(Event.ACCEPTED, descriptor, reason=action)
        self.manager.request(descriptor)  # prefetch before records of this type arrive

    def _report(self, state: int, d: pb.ModelDescriptor, reason: str = ""):
        """Broadcast-side decisions are the same on every subtask: subtask 0 reports them."""
        if self.subtask == 0:
            yield MODEL_EVENTS + messages.model_event(
                state, d.data_type, d.name, d.version, reason, self.subtask)

    def _collect_loads(self):
        """Report loads that finished in the background: READY, or ERROR with the reason."""
        for d, status in self.manager.collect():
            if status.state == READY:
                s = status.servable
                self.totals.record_load(s.fetch_ms + s.load_ms + s.warm_up_ms)
                self.metrics.sync()
                verified = f"verified on {s.verified} samples" if s.verified else ""
                yield MODEL_EVENTS + self._event(Event.READY, d.data_type, d, verified, fetch_ms=s.fetch_ms,
                                                load_ms=s.load_ms, warm_up_ms=s.warm_up_ms)
            else:
                yield MODEL_EVENTS + self._event(
                    Event.ERROR, d.data_type, d,
                    f"{status.error}; the data type keeps its current model (one that has "
                    f"none retries in {self.manager.retry_after_s:.0f}s)")

    def _mirror(self, ctx) -> None:
        """After a restore, models load as their data types' records or timers ask for them:
        a current model first, then the next one (prefetching every accepted descriptor
        would queue the ones that serve behind upgrades that may have failed)."""
        if self.accepted is None:  # first use, also after a restore from a checkpoint
            self.accepted = {k: pb.ModelDescriptor.FromString(v)
                             for k, v in ctx.get_broadcast_state(self.accepted_models).items()}

    def on_timer(self, timestamp: int, ctx):
        data_type = ctx.get_current_key()
        # After a restore a timer can fire before any element: build the mirror here too.
        self._mirror(ctx)
        yield from self._collect_loads()
        km = self._key_models(data_type)
        yield from self._advance(data_type, km)
        if km.held:
            servable = self._servable(km)
            if servable is not None:
                km.poll_delay_ms = 0
                yield from self._flush(servable, data_type, km)
            elif self._waited_out(data_type, km):
                yield from self._release_unpublished(data_type, km)
            else:
                self._poll_again(ctx, km)
        self._await_load(ctx, km)
        yield from self._report_stats(data_type, km, ctx, now=max(messages.now_ms(), timestamp))

    def _unservable(self, km: KeyState) -> str:
        only = km.next if km.current is None else None  # the model this key waits for, if any
        status = self.manager.get(only, urgent=True) if only is not None else None
        return unservable_reason(km, status, self.manager.retry_after_s)

    def _hold_refusal(self, data_type: str, km: KeyState | None, incoming: int = 1) -> str:
        return hold_refusal(km.held if km else 0, data_type in self.accepted, self.held_total,
                            self._waited_ms(data_type, km), self.limits, incoming)

    def _waited_ms(self, data_type: str, km: KeyState | None) -> float:
        """How long the key's records have waited for a descriptor of their data type (0 once it has one)."""
        if km is None or data_type in self.accepted:
            return 0.0
        if not km.unpublished_since_s:
            km.unpublished_since_s = time.monotonic()
        return (time.monotonic() - km.unpublished_since_s) * 1000

    def _waited_out(self, data_type: str, km: KeyState) -> bool:
        return data_type not in self.accepted and self._waited_ms(data_type, km) >= self.limits.unpublished_ms

    def _drop_held(self, km: KeyState) -> None:
        """The key's buffer emptied: its records were just taken out of it."""
        self.buffer.clear()
        self._unserved(km, -km.unserved)
        km.held, km.batch = 0, []

    def _unserved(self, km: KeyState, change: int) -> None:
        km.unserved += change
        self.held_total += change

    def _await_load(self, ctx, km: KeyState) -> None:
        """While the next model loads, a timer looks again: its READY or ERROR event and the
        swap must not wait for a record that may not come."""
        if km.next is not None and self.manager.is_loading(km.next) \
                and km.poll_timer_ms < ctx.timer_service().current_processing_time():
            self._poll_again(ctx, km)

    def _poll_again(self, ctx, km: KeyState) -> None:
        o = self.options
        km.poll_delay_ms = next_poll_ms(km.poll_delay_ms, o.load_poll_ms, o.max_load_poll_ms)
        km.poll_timer_ms = ctx.timer_service().current_processing_time() + km.poll_delay_ms
        ctx.timer_service().register_processing_time_timer(km.poll_timer_ms)

    # ---- the lifecycle of one key's models ---------------------------------------------
    def _key_models(self, data_type: str) -> KeyState:
        km = self.keys.get(data_type)
        if km is None:  # first record or timer of this key in this process: read keyed state
            current, nxt, previous = (s.value() for s in (self.current_state, self.next_state, self.previous_state))
            rollout, watch = from_json(json.loads(self.rollout_state.value() or "{}"))
            km = KeyState(
                current=pb.ModelDescriptor.FromString(current) if current else None,
                next=pb.ModelDescriptor.FromString(nxt) if nxt else None,
                failed_id=self.failed_state.value() or "",
                rollout=rollout, watch=watch,
                previous=pb.ModelDescriptor.FromString(previous) if previous else None,
                held=self._restored_held(),
            )
            self.keys[data_type] = km
            if km.current is None:
                self._unserved(km, km.held)
        return km

    def _save(self, km: KeyState) -> None:
        """Writes the key's lifecycle to keyed state (the buffer is written as it changes)."""
        for state, d in ((self.current_state, km.current), (self.next_state, km.next),
                         (self.previous_state, km.previous)):
            if d is None:
                state.clear()
            else:
                state.update(d.SerializeToString())
        self.failed_state.update(km.failed_id)
        self._save_rollout(km)

    def _save_rollout(self, km: KeyState) -> None:
        if km.rollout is None and km.watch is None:
            self.rollout_state.clear()
        else:
            self.rollout_state.update(json.dumps(to_json(km.rollout, km.watch)))

    def _element_of(self, data_type: str, ctx):
        """An element of the key arrived: its models advance (a swap, a rollout's decision), and
        the model that serves it now, if one is ready (returned; the events are yielded)."""
        km = self._key_models(data_type)
        yield from self._advance(data_type, km)
        self._await_load(ctx, km)
        return km, self._servable(km)

    def _advance(self, data_type: str, km: KeyState):
        """Take up a newly accepted descriptor as `next`; swap it in once it is READY, or run
        its rollout; watch a promoted model."""
        taken = take_up(km, self.accepted.get(data_type))
        if taken is not None:
            yield from self._taken_up(data_type, km, taken)
        if km.next is not None:
            now = messages.now_ms()
            change = settle(km, self.manager.get(km.next, urgent=km.current is None), now)
            if change is not None:
                self._save(km)
                yield from self._changed(data_type, km, change, now)
        if km.watch is None:
            return
        back = review_watch(km, messages.now_ms())
        if km.watch is None:  # the window ended, or the model failed it
            self._save(km)
        if back is not None:
            self.manager.request(back.to, urgent=True)
            yield MODEL_EVENTS + self._event(
                Event.ROLLED_BACK, data_type, back.failed,
                f"{back.reason}; {label(back.to)} serves again once loaded. This lives in the job's "
                f"state: to make it permanent, publish a ROLLBACK to v{back.to.version}")

    def _taken_up(self, data_type: str, km: KeyState, taken: TakenUp):
        self._save(km)
        if taken.superseded is not None:
            yield MODEL_EVENTS + self._event(
                Event.ABANDONED, data_type, taken.superseded,
                f"superseded by {label(taken.descriptor)} "
                f"({pb.ModelDescriptor.Action.Name(taken.descriptor.action)}) before its rollout ended")
        if not taken.promotion:
            self.manager.request(taken.descriptor, urgent=taken.urgent)
            yield MODEL_EVENTS + self._event(Event.LOADING, data_type, taken.descriptor)

    def _changed(self, data_type: str, km: KeyState, change, now_ms: int):
        if isinstance(change, Swapped):
            yield from self._swapped(data_type, change, now_ms)
        elif isinstance(change, GaveUp):  # its ERROR was reported by _collect_loads
            log.warning("data type %s keeps %s: %s", data_type, label(km.current), change.error)
        elif isinstance(change, RolloutStarted):
            policy = change.descriptor.rollout
            pairs = "" if not policy.send_pairs else (
                "; pairs go to the pairs topic" if self.options.send_pairs
                else "; pairs are NOT sent: the job has no --pairs-topic")
            yield MODEL_EVENTS + self._event(
                Event.ROLLOUT_STARTED, data_type, change.descriptor,
                f"{describe_policy(policy)}; beside {label(km.current)}{pairs}")
        elif isinstance(change, GatePassed):
            d = change.descriptor
            yield MODEL_EVENTS + self._event(
                Event.GATE_PASSED, data_type, d,
                f"{change.reason}; waiting for: model-store promote --name {d.name} --version {d.version}")
        elif isinstance(change, Abandoned):
            yield MODEL_EVENTS + self._event(
                Event.ABANDONED, data_type, change.descriptor,
                f"{change.reason}; {label(km.current)} serves on", stats=change.progress.as_stats(now_ms))

    def _swapped(self, data_type: str, change: Swapped, now_ms: int):
        self.totals.model_swaps += 1
        self.metrics.sync()
        s = change.servable
        if change.promoted:
            yield MODEL_EVENTS + self._event(
                Event.PROMOTED, data_type, change.new, f"{change.promoted}; replaces {label(change.old)}",
                stats=change.progress.as_stats(now_ms) if change.progress else None)
        yield MODEL_EVENTS + self._event(
            Event.AVAILABLE, data_type, change.new,
            f"replaces {label(change.old)}" if change.old else "first model for this data type",
            fetch_ms=s.fetch_ms, load_ms=s.load_ms, warm_up_ms=s.warm_up_ms)
        if change.unloads_old:
            yield MODEL_EVENTS + self._event(
                Event.UNLOADED, data_type, change.old, stats=self.stats.get((change.old.name, change.old.version)))

    def _servable(self, km: KeyState) -> Servable | None:
        if km.current is None:
            return None
        status = self.manager.get(km.current, urgent=True)  # after a restore or an eviction: reloads
        return status.servable if status.state == READY else None

    def _candidate(self, km: KeyState) -> Servable | None:
        """The next model, when its rollout has started (it is READY)."""
        if km.rollout is None or km.rollout.started_ms < 0:
            return None
        status = self.manager.get(km.next)
        return status.servable if status.state == READY else None

    def _account(self, servable: Servable, size: int, failed: int, elapsed_s: float) -> None:
        stats = self.stats.setdefault(servable.key, ModelStats(*servable.key))
        stats.record_batch(size, failed, elapsed_s * 1000)
        self.totals.record_batch(size, failed, elapsed_s)
        self.metrics.sync()

    def _report_stats(self, data_type: str, km: KeyState, ctx, now: int | None = None):
        """A data type's counters go out every --stats-interval-ms while it scores, and once
        more by a timer when it goes quiet: status shows what was scored, not what was
        scored before the last record that happened to follow."""
        if not km.unreported or km.current is None:
            return
        due = km.last_stats_ms + self.options.stats_interval_ms
        now = now or messages.now_ms()
        if now >= due:
            km.last_stats_ms, km.unreported = now, False
            stats = self.stats.get((km.current.name, km.current.version))
            yield MODEL_EVENTS + self._event(Event.STATS, data_type, km.current, stats=stats)
            if km.rollout is not None and km.rollout.started_ms >= 0:
                yield MODEL_EVENTS + self._event(Event.SHADOW_STATS, data_type, km.next,
                                                stats=km.rollout.as_stats(now))
        elif km.stats_timer_ms != due:
            km.stats_timer_ms = due
            ctx.timer_service().register_processing_time_timer(due)

    def _event(self, state: int, data_type: str, d: pb.ModelDescriptor, reason: str = "",
               **extra) -> bytes:
        return messages.model_event(state, data_type, d.name, d.version, reason, self.subtask, **extra)

    # ---- what a path holds in the key's buffer ----------------------------------------
    def _flush(self, servable: Servable, data_type: str, km: KeyState):
        """Serve everything the key holds: a model is ready for it."""
        raise NotImplementedError

    def _release_unpublished(self, data_type: str, km: KeyState):
        """Dead-letter what the key holds: no descriptor came for its data type in time."""
        raise NotImplementedError

    def _restored_held(self) -> int:
        """How many records the key's buffer holds, as restored from a checkpoint."""
        raise NotImplementedError
