"""The PyFlink functions of the scoring job: they move records and state in and out of
Flink; what to do with them is decided by the PyFlink-free `scoring` package.

- `ParseDescriptors`: bytes -> ModelDescriptor bytes; invalid ones -> REJECTED model events.
- `ScoreRecords`: the KeyedBroadcastProcessFunction. Its records come keyed by the data
  type the JVM read from their bytes (`jvm/keying`); it parses each once, and dead-letters
  those it cannot score with the reason (`scoring.records`). Broadcast state keeps the latest
  accepted descriptor per data type; keyed state keeps the key's current and next model
  descriptors, its buffered records, and the progress of a rollout (`scoring.rollout`).
  Models load on a background thread (`ModelManager`); the swap current <- next happens
  in `process_element`/`on_timer`, on the operator thread, between two records. During a
  SHADOW or CANARY rollout both models score the key's records in the same batch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path

from pyflink.common import TypeInformation, Types
from pyflink.datastream import (
    KeyedBroadcastProcessFunction,
    ProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import (
    ListStateDescriptor,
    MapStateDescriptor,
    ValueStateDescriptor,
)

from contract import scoring_pb2 as pb
from contract import signing
from contract.json_records import decode_record
from contract.rollout import describe_policy
from contract.values import inputs_of
from jobs.flink_env import BYTES
from model_store.fetcher import (
    ArtifactFetcher,
    FetchError,
    FetchPolicy,
    default_cache_dir,
    private_directory,
)
from scoring import explain, messages
from scoring.batch import Outcome, identity_batch, score_batch
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
    scores_at_once,
    settle,
    take_up,
    unservable_reason,
)
from scoring.loader import DescriptorError, Servable, check_signed, load_servable, parse_descriptor
from scoring.manager import READY, ModelManager
from scoring.options import ScoringOptions
from scoring.poison import CrashJournal
from scoring.policy import accept, over_capacity
from scoring.records import UnreadableRecord, read_record
from scoring.rollout import from_json, takes_part, to_json
from scoring.stats import ModelStats, OperatorTotals

log = logging.getLogger(__name__)

# The functions' outputs carry where they go in their first byte; the job's RouteByTag (JVM)
# strips it and sends them there. PyFlink's own side outputs would not do: in thread mode,
# what on_timer yields reaches the main output whatever its OutputTag (PyFlink 2.2.1).
SIDE_OUTPUTS = ("dead-letters", "model-events", "shadow-pairs")
MAIN, DEAD_LETTERS, MODEL_EVENTS, SHADOW_PAIRS = (bytes([i]) for i in range(1 + len(SIDE_OUTPUTS)))


def state_bytes(execution_mode: str) -> TypeInformation:
    """The type of the state that holds bytes. In thread mode, PyFlink 2.2.1 turns bytes
    state into tuples of ints (and fails on an empty value): it is pickled there instead."""
    return Types.PICKLED_BYTE_ARRAY() if execution_mode == "thread" else BYTES


def accepted_models(execution_mode: str) -> MapStateDescriptor:
    """The broadcast state: each data type's latest accepted descriptor."""
    return MapStateDescriptor("accepted-models", Types.STRING(), state_bytes(execution_mode))


def subtask_index(runtime_context: RuntimeContext) -> int:
    embedded = getattr(runtime_context, "_runtime_context", None)
    if embedded is not None:  # thread mode: PyFlink 2.2.1 calls a method Flink 2 moved
        return embedded.getTaskInfo().getIndexOfThisSubtask()
    return runtime_context.get_index_of_this_subtask()

Event = pb.ModelEvent
UNSIGNED_WARNING = ("NO --trusted-keys: this job runs ANY model descriptor written to its models topic, "
                    "signed or not, replays included. Give it --trusted-keys in production.")
Arrived = tuple[bytes, pb.DataRecord, bool]  # a record's bytes, the record, whether it came as JSON


class ParseDescriptors(ProcessFunction):
    """Keeps valid ModelDescriptors (signed by a trusted key, if the job has any); reports the
    others as REJECTED model events."""

    def __init__(self, trusted_keys: tuple[str, ...] = (), revoked: tuple[str, ...] = ()) -> None:
        self.trusted_keys, self.revoked = trusted_keys, revoked

    def open(self, runtime_context: RuntimeContext) -> None:
        self.trust = signing.load_trust(self.trusted_keys, self.revoked)
        if not self.trust.required:
            log.warning(UNSIGNED_WARNING)

    def process_element(self, value: bytes, ctx):
        try:
            d = parse_descriptor(value)
        except DescriptorError as err:
            yield MODEL_EVENTS + messages.model_event(Event.REJECTED, "", reason=str(err))
            return
        try:
            check_signed(d, self.trust)
        except DescriptorError as err:
            yield MODEL_EVENTS + messages.model_event(Event.REJECTED, d.data_type, d.name, d.version, str(err))
            return
        yield MAIN + value


class FlinkMetrics:
    """The operator's totals in its Flink metric group, the one way each mode allows.

    Process mode: gauges over the totals. PyFlink 2.2.1 drops what a counter counts inside
    on_timer (its timers run outside the operation's metrics scope), where most batches are
    scored; gauges are read at each bundle's end, inside it. Thread mode: counters, brought up
    to the totals after each change. A gauge there is a Python callable that Flink's metric
    threads call into the embedded interpreter, and a REST metrics query crashed the
    TaskManager that way (SIGSEGV in PEMJA)."""

    def __init__(self, group, totals: OperatorTotals, execution_mode: str) -> None:
        self.totals = totals
        self.counters, self.counted = {}, {}
        for f in fields(OperatorTotals):
            if execution_mode == "thread":
                self.counters[f.name], self.counted[f.name] = group.counter(f.name), 0
            else:
                group.gauge(f.name, partial(getattr, totals, f.name))

    def sync(self) -> None:
        """Thread mode: add to each counter what its total gained since the last call."""
        for name, counter in self.counters.items():
            gained = getattr(self.totals, name) - self.counted[name]
            if gained:
                counter.inc(gained)
                self.counted[name] += gained


@dataclass
class KeyState(KeyModels):
    """In-memory mirror of one key's state (the truth is in Flink keyed state), with what the
    operator counts for it."""

    held: int = 0  # records in the key's buffer (a ListState): counted here, not in state
    unserved: int = 0  # of them, those held while no model served (in ScoreRecords.held_total)
    # The buffer's records as parsed on arrival, while this process has seen all of them
    # (not the ones held while no model was ready, nor those restored with the key).
    batch: list[Arrived] = field(default_factory=list)
    last_record_s: float = 0.0  # time.monotonic() of the key's last record
    last_stats_ms: int = field(default_factory=messages.now_ms)
    unreported: bool = False  # scored since the last STATS event
    stats_timer_ms: int = 0  # when the timer that reports them fires
    poll_timer_ms: int = 0  # when the timer that looks for a model for the held records fires
    poll_delay_ms: int = 0  # how long it waited last: doubles while no model comes
    unpublished_since_s: float = 0.0  # time.monotonic() of the first record held with no descriptor


class ScoreRecords(KeyedBroadcastProcessFunction):
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
        self.manager = ModelManager(load, o.model_cache_size, o.load_retry_s)
        self.accepted: dict[str, pb.ModelDescriptor] | None = None  # mirror of broadcast state
        self.keys: dict[str, KeyState] = {}
        self.limits = HoldLimits(o.max_held_records, o.max_held_total, o.hold_unpublished_ms)
        self.held_total = 0  # records this subtask holds for keys no model serves
        self.journal = self._crash_journal()
        self.stats: dict[tuple[str, int], ModelStats] = {}
        # Operator-wide metrics only: per-version numbers go out in STATS/UNLOADED model events.
        # Flink metrics cannot be unregistered, and Beam reports every one at every bundle end
        # (9% of the worker's time with 1,000 models, measured), so one per version would leak.
        self.totals = OperatorTotals()
        self.metrics = FlinkMetrics(runtime_context.get_metrics_group().add_group("scoring"), self.totals,
                                    self.execution_mode)

    def _crash_journal(self) -> CrashJournal:
        o = self.options
        try:
            directory = private_directory(Path(o.model_cache_dir or default_cache_dir())) / ".journal"
            return CrashJournal(directory / f"{o.journal_name}-{self.subtask}.json", o.max_record_crashes)
        except (FetchError, OSError) as err:  # the fetches will say so too: no reason to fail the task
            log.warning("no crash journal (records that kill the worker are not dead-lettered): %s", err)
            return CrashJournal(None, o.max_record_crashes)

    def close(self) -> None:
        self.manager.close()
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

    # ---- records (keyed side) --------------------------------------------------------
    def process_element(self, raw: bytes, ctx):
        data_type = ctx.get_current_key()
        try:
            record, as_json = read_record(raw, data_type, self.options.max_record_bytes, self.options.record_format)
        except UnreadableRecord as err:
            yield DEAD_LETTERS + messages.dead_letter(err.original, "parse", str(err), err.record)
            return
        arrived = (raw, record, as_json)
        self._mirror(ctx)
        if self.manager.loading:
            yield from self._collect_loads()
        if data_type not in self.keys and data_type not in self.accepted:
            refusal = self._hold_refusal(data_type, None)
            if refusal:  # no state, no timer for it
                yield DEAD_LETTERS + messages.dead_letter(raw, "no-model", refusal, record)
                return
        km = self._key_models(data_type)
        yield from self._advance(data_type, km)
        self._await_load(ctx, km)
        servable = self._servable(km)
        if servable is None:
            yield from self._hold(arrived, data_type, km, ctx)
            return
        if self._sparse(km):
            yield from self._score(servable, data_type, km, [arrived])
        else:
            self.buffer.add(raw)
            km.held += 1
            km.batch.append(arrived)
            if km.held >= self.options.batch_size:
                yield from self._flush(servable, data_type, km)
            elif km.held == 1:
                ctx.timer_service().register_processing_time_timer(
                    ctx.timer_service().current_processing_time() + self.options.batch_max_wait_ms)
        yield from self._report_stats(data_type, km, ctx)

    def _sparse(self, km: KeyState) -> bool:
        now, last = time.monotonic(), km.last_record_s
        km.last_record_s = now
        return scores_at_once(km.held, last, now, self.options.batch_max_wait_ms / 1000)

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

    def _hold(self, arrived: Arrived, data_type: str, km: KeyState, ctx):
        """No model is ready for this key: keep the record (bounded) or dead-letter it. Held
        records are not kept parsed in memory: there may be many."""
        raw, record, _ = arrived
        unservable = self._unservable(km) if self.options.no_model_policy == "dead-letter" else ""
        refusal = unservable or self._hold_refusal(data_type, km)
        if refusal:
            yield DEAD_LETTERS + messages.dead_letter(raw, "no-model", refusal, record)
            return
        self.buffer.add(raw)
        km.held += 1
        self._unserved(km, 1)
        # Not only on the first held record: records restored with the key (a restore, a
        # rescale) need a timer of this process too, should the restored ones not come.
        if km.poll_timer_ms < ctx.timer_service().current_processing_time():
            self._poll_again(ctx, km)

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

    def _release_unpublished(self, data_type: str, km: KeyState):
        """The records of a data type that got no descriptor while they waited: dead-lettered,
        and the key's buffer and mirror freed."""
        reason = self._hold_refusal(data_type, km)
        for raw in self.buffer.get() or ():
            record, _ = decode_record(raw, self.options.record_format)
            yield DEAD_LETTERS + messages.dead_letter(raw, "no-model", reason, record)
        self._drop_held(km)
        del self.keys[data_type]

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

    def _restored_held(self) -> int:
        """Records in the key's buffer as restored from a checkpoint (one per entry)."""
        return sum(1 for _ in self.buffer.get() or ())

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

    # ---- scoring -------------------------------------------------------------------------
    def _flush(self, servable: Servable, data_type: str, km: KeyState):
        if len(km.batch) == km.held:
            batch = km.batch
        else:  # some were held or restored: the buffer has them all (read_record passed them)
            batch = [(raw, *decode_record(raw, self.options.record_format)) for raw in self.buffer.get()]
        self._drop_held(km)
        yield from self._score(servable, data_type, km, batch)

    def _score(self, servable: Servable, data_type: str, km: KeyState, batch: list[Arrived]):
        batch = yield from self._without_poison(servable, data_type, km, batch)
        records, inputs = [], []
        for arrived in batch:
            raw, record, _ = arrived
            try:
                inputs.append(inputs_of(record))
                records.append(arrived)
            except ValueError as err:
                yield DEAD_LETTERS + messages.dead_letter(
                    raw, "validate", f"bad input value: {err}", record, servable.key)
        if not records:
            return
        self.journal.scoring([raw for raw, _, _ in records])
        outcomes, us = self._call(servable, inputs)
        served = [(outcome, servable) for outcome in outcomes]
        candidate = self._candidate(km)
        if candidate is not None:
            yield from self._beside(candidate, servable, km, records, inputs, outcomes, us, served)
        self._explain(records, inputs, served)
        self.journal.scored()
        for (raw, record, as_json), (outcome, by) in zip(records, served, strict=True):
            message, failure = messages.result_or_failure(record, outcome, by, as_json)
            if failure is None:
                yield MAIN + message
            else:
                yield DEAD_LETTERS + messages.dead_letter(raw, *failure, record, by.key)
        if km.watch is not None:
            failed = sum(not o.ok for o in outcomes)
            km.watch.add(len(outcomes) - failed, failed)
            self._save_rollout(km)
        km.unreported = True
        if candidate is not None or km.watch is not None:  # decide now: no record may follow
            yield from self._advance(data_type, km)

    def _without_poison(self, servable: Servable, data_type: str, km: KeyState, batch: list[Arrived]):
        """The batch without the records that crashed a worker before (scoring.poison): those
        that did `max_crashes` times are dead-lettered, the others scored alone first, so that
        another crash names the record that causes it."""
        if not self.journal.crashes:
            return batch
        rest = []
        for arrived in batch:
            crashes = self.journal.crashes_of(arrived[0])
            if self.journal.poisoned(arrived[0]):
                yield DEAD_LETTERS + messages.dead_letter(
                    arrived[0], "score",
                    f"the worker process died {crashes} times while this record was being scored (a crash "
                    "in the model's native code, say): dead-lettered so that the job goes on",
                    arrived[1], servable.key)
            elif crashes and len(batch) > 1:
                yield from self._score(servable, data_type, km, [arrived])
            else:
                rest.append(arrived)
        return rest

    def _call(self, servable: Servable, inputs: list) -> tuple[list[Outcome], float]:
        """One model call for a batch; returns the outcomes and the time per record in µs."""
        started = time.perf_counter()
        outcomes = (identity_batch if self.options.passthrough else score_batch)(servable.model, inputs)
        elapsed = time.perf_counter() - started
        self._account(servable, len(outcomes), sum(not o.ok for o in outcomes), elapsed)
        return outcomes, elapsed * 1e6 / max(1, len(outcomes))

    def _candidate(self, km: KeyState) -> Servable | None:
        """The next model, when its rollout has started (it is READY)."""
        if km.rollout is None or km.rollout.started_ms < 0:
            return None
        status = self.manager.get(km.next)
        return status.servable if status.state == READY else None

    def _beside(self, candidate: Servable, servable: Servable, km: KeyState, records, inputs,
                outcomes: list[Outcome], us_current: float, served: list):
        """The candidate scores its share of the batch, and the rollout counts how the two models
        compare. In CANARY, the candidate's results are the ones served (the current model's, if
        the candidate failed the record)."""
        policy = km.next.rollout
        salt = f"{km.next.name}:{km.next.version}"
        chosen = [i for i, ((_, record, _), x) in enumerate(zip(records, inputs, strict=True))
                  if takes_part(policy, salt, record.record_id, x)]
        if not chosen:
            return
        theirs, us_candidate = self._call(candidate, [inputs[i] for i in chosen])
        mine = [outcomes[i] for i in chosen]
        differ = km.rollout.add(mine, theirs, policy.gate.tolerance, us_current, us_candidate)
        canary, pairs = policy.mode == pb.RolloutPolicy.CANARY, policy.send_pairs and self.options.send_pairs
        for i, m, t, d in zip(chosen, mine, theirs, differ, strict=True):
            if canary and t.ok:
                served[i] = (t, candidate)
            if pairs:
                yield SHADOW_PAIRS + messages.shadow_pair(records[i][1], servable, candidate, m, t, d, canary and t.ok)
        self._save_rollout(km)

    @staticmethod
    def _explain(records, inputs, served: list[tuple[Outcome, Servable]]) -> None:
        """The model that served a record explains it, if its descriptor chose the record."""
        asked: dict[tuple[str, int], list[int]] = {}
        for i, ((_, record, _), (outcome, by)) in enumerate(zip(records, served, strict=True)):
            if outcome.ok and explain.chosen(record.record_id, by.name, by.version, by.explain_fraction):
                asked.setdefault(by.key, []).append(i)
        for indices in asked.values():
            by = served[indices[0]][1]
            explain.explain_into(by.model, [inputs[i] for i in indices], [served[i][0] for i in indices])

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
