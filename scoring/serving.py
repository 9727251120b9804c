"""One data type's batch of columns served (the columnar path, docs/columnar.md): the current
model scores it in one call, a rollout's candidate scores its share beside it (in CANARY its
results serve), chosen rows are explained, and out comes one batch of outcomes
(contract.columns.outcomes_to_columns) for the JVM's writer, with the rollout's pairs.

No PyFlink: `jobs/score_batches.ScoreBatches` keeps the state and drives this. Rows are
touched one by one only where a row-wise decision is made: in a rollout, for explanations,
and after a worker crash (scoring.poison).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from contract import scoring_pb2 as pb
from contract.columns import Arrived, data_type_of, outcomes_to_columns, outputs_of_row, to_columns
from scoring import explain, messages
from scoring.backends.base import LoadedModel
from scoring.batch import Outcome
from scoring.columns import Scored, score_columns
from scoring.errors import PredictionError, RecordError
from scoring.loader import Servable
from scoring.poison import CrashJournal
from scoring.rollout import Progress, takes_part

Account = Callable[[Servable, int, int, float], None]  # (model, rows, failed, seconds)
POISONED = ("the worker process died {} times while this record was being scored (a crash in the model's "
            "native code, say): dead-lettered so that the job goes on")


@dataclass
class Rollout:
    """The candidate of a running rollout, its policy and what it has seen."""

    candidate: Servable
    descriptor: pb.ModelDescriptor
    progress: Progress
    send_pairs: bool


@dataclass
class Served:
    """What a batch gave: its outcomes (one row per input row) and the rollout's pairs."""

    results: list[pa.RecordBatch] = field(default_factory=list)
    pairs: list[bytes] = field(default_factory=list)
    scored: int = 0
    failed: int = 0


@dataclass
class Rows:
    """The batch's outcome as it is built: per row the model that answers, and why it failed."""

    models: list[tuple[str, int]]
    scored: Scored

    def outcomes(self, rows: Sequence[int]) -> list[Outcome]:
        return [self.outcome(i) for i in rows]

    def outcome(self, row: int) -> Outcome:
        s = self.scored
        if s.reasons[row] is not None:
            error = (PredictionError if s.stages[row] == "score" else RecordError)(s.reasons[row])
            return Outcome(error=error)
        return Outcome(outputs={name: column[row] for name, column in s.outputs.items()
                                if not isinstance(column, list) or column[row] is not None})

    def set_outputs(self, row: int, outputs: dict, model: tuple[str, int]) -> None:
        """The row answered by another model (a canary), or with more outputs (explanations)."""
        s = self.scored
        self.models[row] = model
        for name in set(s.outputs) | set(outputs):
            column = s.outputs.get(name)
            if not isinstance(column, list):
                column = s.outputs[name] = [None] * len(s.reasons) if column is None else list(column)
            column[row] = outputs.get(name)


def refused(batch: pa.RecordBatch, stage: str, reason: str, model: tuple[str, int] = ("", 0)) -> pa.RecordBatch:
    """Every row of the batch dead-lettered with the same reason."""
    n = batch.num_rows
    return outcomes_to_columns(batch, [model] * n, [stage] * n, [reason] * n, {})


def single_row(arrived: Arrived, data_type: str) -> pa.RecordBatch:
    """A record Python's reader read (the JVM left it): a batch of its own."""
    return to_columns(data_type, [arrived])


def digests(batch: pa.RecordBatch) -> bytes:
    """The rows' 16-byte digests, one after the other (no loop over rows)."""
    column = batch.column("digest")
    data = column.buffers()[1]
    return data.to_pybytes()[column.offset * 16:(column.offset + len(column)) * 16]


class BatchServer:
    """Serves batches for one operator instance: `account` gets each model call's figures."""

    def __init__(self, journal: CrashJournal, account: Account,
                 model_call: Callable[[LoadedModel, pa.RecordBatch], Scored] = score_columns) -> None:
        self.journal = journal
        self.account = account
        self.model_call = model_call

    def serve(self, batch: pa.RecordBatch, current: Servable, rollout: Rollout | None) -> Served:
        served = Served()
        for part in self._without_poison(batch, current, served):
            self._serve(part, current, rollout, served)
        return served

    def _without_poison(self, batch: pa.RecordBatch, current: Servable, served: Served) -> list[pa.RecordBatch]:
        """The batch in parts to score: the rows that crashed a worker before alone (a second
        crash names the record), those that did `max_crashes` times dead-lettered."""
        journal = self.journal
        if not journal.crashes:
            return [batch]
        flat = digests(batch)
        crashes = [journal.crashes_of_digest(flat[i * 16:(i + 1) * 16].hex()) for i in range(batch.num_rows)]
        poisoned = [i for i, n in enumerate(crashes) if n >= journal.max_crashes]
        for i in poisoned:
            served.results.append(refused(batch.slice(i, 1), "score", POISONED.format(crashes[i]), current.key))
            served.failed += 1
        alone = [i for i, n in enumerate(crashes) if 0 < n < journal.max_crashes]
        rest = [i for i, n in enumerate(crashes) if n == 0]
        if len(alone) == 1 and not rest:
            return [batch.slice(alone[0], 1)]
        return [batch.slice(i, 1) for i in alone] + ([batch.take(pa.array(rest))] if rest else [])

    def _serve(self, batch: pa.RecordBatch, current: Servable, rollout: Rollout | None, served: Served) -> None:
        self.journal.scoring_digests(digests(batch))
        scored, us = self._call(current, batch)
        rows = Rows([current.key] * batch.num_rows, scored)
        if rollout is not None:
            self._beside(batch, current, rollout, rows, us, served)
        self._explain(batch, rows, {current.key: current} | ({rollout.candidate.key: rollout.candidate}
                                                            if rollout else {}))
        self.journal.scored()
        failed = sum(r is not None for r in scored.reasons)
        served.scored += batch.num_rows - failed
        served.failed += failed
        served.results.append(outcomes_to_columns(batch, rows.models, scored.stages, scored.reasons,
                                                  scored.outputs))

    def _call(self, servable: Servable, batch: pa.RecordBatch) -> tuple[Scored, float]:
        """One model call for the batch; the time per row in µs."""
        started = time.perf_counter()
        n = batch.num_rows
        scored = self.model_call(servable.model, batch)
        elapsed = time.perf_counter() - started
        self.account(servable, n, sum(r is not None for r in scored.reasons), elapsed)
        return scored, elapsed * 1e6 / max(1, n)

    def _beside(self, batch: pa.RecordBatch, current: Servable, rollout: Rollout, rows: Rows, us_current: float,
                served: Served) -> None:
        """The candidate scores its share, the rollout counts how the two compare; in CANARY the
        candidate's results serve (the current model's where the candidate failed the row)."""
        d, candidate = rollout.descriptor, rollout.candidate
        policy, salt = d.rollout, f"{d.name}:{d.version}"
        record_ids = batch.column("record_id").to_pylist()
        entity = policy.entity_field
        chosen = [i for i, record_id in enumerate(record_ids)
                  if takes_part(policy, salt, record_id, outputs_of_row(batch, i) if entity else {})]
        if not chosen:
            return
        theirs_scored, us_candidate = self._call(candidate, batch.take(pa.array(chosen, pa.int64())))
        theirs = Rows([candidate.key] * len(chosen), theirs_scored).outcomes(range(len(chosen)))
        mine = rows.outcomes(chosen)
        differ = rollout.progress.add(mine, theirs, policy.gate.tolerance, us_current, us_candidate)
        canary = policy.mode == pb.RolloutPolicy.CANARY
        data_type = data_type_of(batch)
        for i, m, t, disagreeing in zip(chosen, mine, theirs, differ, strict=True):
            if canary and t.ok:
                rows.scored.reasons[i], rows.scored.stages[i] = None, ""
                rows.set_outputs(i, t.outputs, candidate.key)
            if rollout.send_pairs:
                record = pb.DataRecord(record_id=record_ids[i], data_type=data_type)
                served.pairs.append(messages.shadow_pair(record, current, candidate, m, t, disagreeing,
                                                         canary and t.ok))

    @staticmethod
    def _explain(batch: pa.RecordBatch, rows: Rows, servables: dict[tuple[str, int], Servable]) -> None:
        """The model that answered a row explains it, if its descriptor chose the record."""
        if not any(s.explain_fraction > 0 for s in servables.values()):
            return
        record_ids = batch.column("record_id").to_pylist()
        asked: dict[tuple[str, int], list[int]] = {}
        for i in np.flatnonzero([r is None for r in rows.scored.reasons]).tolist():
            by = servables[rows.models[i]]
            if explain.chosen(record_ids[i], by.name, by.version, by.explain_fraction):
                asked.setdefault(by.key, []).append(i)
        for key, indices in asked.items():
            outcomes = rows.outcomes(indices)
            explain.explain_into(servables[key].model, [outputs_of_row(batch, i) for i in indices], outcomes)
            for i, outcome in zip(indices, outcomes, strict=True):
                rows.set_outputs(i, outcome.outputs, key)
