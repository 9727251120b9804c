"""The columnar path's scoring function (`--columnar`, docs/columnar.md): one element per batch
of one data type's records, read into Arrow columns on the JVM (RecordBatcher); one element
out per scored batch, written record by record on the JVM (WriteResults).

`ScoreBatches` keeps what `ScoreModels` keeps for both paths (broadcast descriptors, current and next
model in keyed state, the swap on the operator thread between two batches, rollouts, stats,
the crash journal); what it does with a batch is `scoring.serving`'s, without PyFlink.
"""

from __future__ import annotations

import time

import pyarrow as pa

from contract.columns import Arrived, from_ipc, to_ipc
from contract.values import inputs_of
from jobs.operators import DEAD_LETTERS, MAIN, SHADOW_PAIRS
from jobs.score_models import KeyState, ScoreModels
from scoring import messages
from scoring.columns import score_columns
from scoring.loader import Servable
from scoring.records import UnreadableRecord, read_record
from scoring.serving import BatchServer, Rollout, refused, single_row

BATCH, RECORD = 1, 2  # the first byte of an element from RecordBatcher (jvm/operators, Batches)


def ipc_payload(tagged: bytes) -> pa.Buffer:
    return pa.py_buffer(memoryview(tagged)[1:])


class ScoreBatches(ScoreModels):
    model_call = staticmethod(score_columns)  # the bench's pass-through job calls no model

    def open(self, runtime_context) -> None:
        super().open(runtime_context)
        self.server = BatchServer(self.journal, self._account, self.model_call)

    def process_element(self, tagged: bytes, ctx):
        data_type = ctx.get_current_key()
        batch = yield from self._batch_of(tagged, data_type)
        if batch is None:
            return
        self._mirror(ctx)
        yield from self._collect_loads()  # once per batch: no batch timer runs here to do it
        if data_type not in self.keys and data_type not in self.accepted:
            refusal = self._hold_refusal(data_type, None, batch.num_rows)
            if refusal:  # no state, no timer for it
                yield MAIN + to_ipc(refused(batch, "no-model", refusal))
                return
        km, servable = yield from self._element_of(data_type, ctx)
        if servable is None:
            yield from self._hold(batch, data_type, km, ctx)
        else:
            yield from self._serve(servable, data_type, km, batch)
        yield from self._report_stats(data_type, km, ctx)

    def _batch_of(self, tagged: bytes, data_type: str):
        """The element's batch; a record the JVM left to Python's reader is dead-lettered with
        its reason here (None), or becomes a batch of its own."""
        if tagged[0] == BATCH:
            return from_ipc(ipc_payload(tagged))
        if tagged[0] != RECORD:
            raise ValueError(f"an element of the columnar path tagged {tagged[0]}: not {BATCH} or {RECORD}")
        raw = bytes(tagged[1:])
        try:
            record, as_json = read_record(raw, data_type, self.options.max_record_bytes, self.options.record_format)
        except UnreadableRecord as err:
            yield DEAD_LETTERS + messages.dead_letter(err.original, "parse", str(err), err.record)
            return None
        try:  # every input, as the record path checks them (a tensor whose shape does not hold its values)
            inputs_of(record)
        except ValueError as err:
            yield DEAD_LETTERS + messages.dead_letter(raw, "validate", f"bad input value: {err}", record)
            return None
        return single_row(Arrived(record, as_json, raw), data_type)

    def _hold(self, batch: pa.RecordBatch, data_type: str, km: KeyState, ctx):
        """No model is ready for this key: keep the batch (bounded) or dead-letter it whole."""
        unservable = self._unservable(km) if self.options.no_model_policy == "dead-letter" else ""
        refusal = unservable or self._hold_refusal(data_type, km, batch.num_rows)
        if refusal:
            yield MAIN + to_ipc(refused(batch, "no-model", refusal))
            return
        self.buffer.add(to_ipc(batch))
        km.held += batch.num_rows
        self._unserved(km, batch.num_rows)
        if km.poll_timer_ms < ctx.timer_service().current_processing_time():
            self._poll_again(ctx, km)

    def _held_batches(self) -> list[pa.RecordBatch]:
        return [from_ipc(data) for data in self.buffer.get() or ()]

    def _restored_held(self) -> int:
        return sum(b.num_rows for b in self._held_batches())

    def _flush(self, servable: Servable, data_type: str, km: KeyState):
        held = self._held_batches()
        self._drop_held(km)
        for batch in held:
            yield from self._serve(servable, data_type, km, batch)

    def _release_unpublished(self, data_type: str, km: KeyState):
        reason = self._hold_refusal(data_type, km)
        for batch in self._held_batches():
            yield MAIN + to_ipc(refused(batch, "no-model", reason))
        self._drop_held(km)
        del self.keys[data_type]

    def _serve(self, servable: Servable, data_type: str, km: KeyState, batch: pa.RecordBatch):
        candidate = self._candidate(km)
        rollout = None if candidate is None else Rollout(
            candidate, km.next, km.rollout, km.next.rollout.send_pairs and self.options.send_pairs)
        started = time.perf_counter()
        served = self.server.serve(batch, servable, rollout)
        outputs = [MAIN + to_ipc(results) for results in served.results]
        stats = self.stats.get(servable.key)
        if stats is not None:
            stats.serve_ms += (time.perf_counter() - started) * 1000
        yield from outputs
        for pair in served.pairs:
            yield SHADOW_PAIRS + pair
        if rollout is not None:
            self._save_rollout(km)
        if km.watch is not None:
            km.watch.add(served.scored, served.failed)
            self._save_rollout(km)
        km.unreported = True
        if candidate is not None or km.watch is not None:  # decide now: no batch may follow
            yield from self._advance(data_type, km)
