"""The record path (`--columnar false`): one element per record. Its records come keyed by
the data type the JVM read from their bytes (`DataTypeKey`); `ScoreRecords` parses each once,
dead-letters those it cannot score with the reason (`scoring.records`), buffers them per key
in keyed list state and scores them in batches. During a SHADOW or CANARY rollout both models
score the key's records in the same batch.
"""

from __future__ import annotations

import time

from contract import scoring_pb2 as pb
from contract.json_records import decode_record
from contract.values import inputs_of
from jobs.operators import DEAD_LETTERS, MAIN, SHADOW_PAIRS
from jobs.score_models import KeyState, ScoreModels
from scoring import explain, messages
from scoring.batch import Outcome, score_batch
from scoring.lifecycle import scores_at_once
from scoring.loader import Servable
from scoring.records import UnreadableRecord, read_record
from scoring.rollout import takes_part

Arrived = tuple[bytes, pb.DataRecord, bool]  # a record's bytes, the record, whether it came as JSON


class ScoreRecords(ScoreModels):
    model_call = staticmethod(score_batch)  # the bench's pass-through job calls no model

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
        km, servable = yield from self._element_of(data_type, ctx)
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

    def _release_unpublished(self, data_type: str, km: KeyState):
        """The records of a data type that got no descriptor while they waited: dead-lettered,
        and the key's buffer and mirror freed."""
        reason = self._hold_refusal(data_type, km)
        for raw in self.buffer.get() or ():
            record, _ = decode_record(raw, self.options.record_format)
            yield DEAD_LETTERS + messages.dead_letter(raw, "no-model", reason, record)
        self._drop_held(km)
        del self.keys[data_type]

    def _restored_held(self) -> int:
        """Records in the key's buffer as restored from a checkpoint (one per entry)."""
        return sum(1 for _ in self.buffer.get() or ())

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
        outcomes = self.model_call(servable.model, inputs)
        elapsed = time.perf_counter() - started
        self._account(servable, len(outcomes), sum(not o.ok for o in outcomes), elapsed)
        return outcomes, elapsed * 1e6 / max(1, len(outcomes))

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
