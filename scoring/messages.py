"""The messages the job writes: results, dead letters and model events, as bytes."""

from __future__ import annotations

import time
from collections.abc import Mapping

import pyarrow as pa

from contract import scoring_pb2 as pb
from contract.columns import data_type_of, outputs_of_row
from contract.json_records import result_json
from contract.values import fill_map
from scoring.batch import Outcome
from scoring.loader import Servable
from scoring.stats import ModelStats


def now_ms() -> int:
    return int(time.time() * 1000)


def result(record: pb.DataRecord, name: str, version: int, outputs: dict, as_json: bool = False) -> bytes:
    """A ScoringResult; for a record that came as JSON, the same fields as JSON."""
    if as_json:
        return result_json(record, name, version, outputs, now_ms())
    message = pb.ScoringResult(
        record_id=record.record_id, data_type=record.data_type, model_name=name,
        model_version=version, event_time_ms=record.event_time_ms, scoring_time_ms=now_ms(),
    )
    fill_map(message.outputs, outputs)
    return message.SerializeToString()


def dead_letter(original: bytes, stage: str, reason: str, record: pb.DataRecord | None = None,
                model: tuple[str, int] = ("", 0)) -> bytes:
    return pb.DeadLetter(
        record_id=record.record_id if record else "",
        data_type=record.data_type if record else "",
        stage=stage, reason=reason, original=original,
        model_name=model[0], model_version=model[1], time_ms=now_ms(),
    ).SerializeToString()


def model_event(state: int, data_type: str, name: str = "", version: int = 0, reason: str = "",
                subtask: int = 0, stats: ModelStats | Mapping[str, float] | None = None, fetch_ms: float = 0.0,
                load_ms: float = 0.0, warm_up_ms: float = 0.0) -> bytes:
    event = pb.ModelEvent(
        data_type=data_type, model_name=name, model_version=version, state=state, reason=reason,
        time_ms=now_ms(), subtask=subtask, fetch_ms=fetch_ms, load_ms=load_ms, warm_up_ms=warm_up_ms,
    )
    if stats is not None:
        event.stats.update(stats.as_map() if isinstance(stats, ModelStats) else stats)
    return event.SerializeToString()


def shadow_pair(record: pb.DataRecord, current: Servable, candidate: Servable, mine: Outcome,
                theirs: Outcome, differ: list[str] | None, served_by_candidate: bool) -> bytes:
    """One record as both models of a rollout scored it (`mine`: the current model)."""
    pair = pb.ShadowPair(
        record_id=record.record_id, data_type=record.data_type, model_name=candidate.name,
        current_version=current.version, candidate_version=candidate.version,
        candidate_error="" if theirs.ok else str(theirs.error), disagreeing=differ or [],
        served_by_candidate=served_by_candidate, time_ms=now_ms(),
    )
    for field, outcome in ((pair.current_outputs, mine), (pair.candidate_outputs, theirs)):
        if outcome.ok:
            try:
                fill_map(field, outcome.outputs)
            except (TypeError, ValueError):
                field.clear()  # the result or dead letter already says what was wrong
    return pair.SerializeToString()


def result_or_failure(record: pb.DataRecord, outcome: Outcome, servable: Servable,
                      as_json: bool = False) -> tuple[bytes | None, tuple[str, str] | None]:
    """The result message, or the (stage, reason) for the dead letter."""
    if not outcome.ok:
        return None, (outcome.error.stage, str(outcome.error))
    try:
        return result(record, servable.name, servable.version, outcome.outputs, as_json), None
    except (TypeError, ValueError) as err:  # the backend returned what a Value cannot hold
        return None, ("score", f"the model's outputs cannot be written as a ScoringResult: {err}")


def from_columns(scored: pa.RecordBatch) -> list[tuple[bool, bytes]]:
    """Per row of a scored batch (contract.columns.outcomes_to_columns): (scored?, its message),
    a result in the record's format or a dead letter; what the JVM's writer is to write."""
    data_type = data_type_of(scored)
    rows = scored.select(["record_id", "event_time_ms", "json", "model_name", "model_version", "stage",
                          "reason", "original"]).to_pylist()
    out = []
    for i, row in enumerate(rows):
        record = pb.DataRecord(record_id=row["record_id"], data_type=data_type, event_time_ms=row["event_time_ms"])
        model = (row["model_name"], row["model_version"])
        if row["reason"] is not None:
            out.append((False, dead_letter(row["original"], row["stage"], row["reason"], record, model)))
        else:
            out.append((True, result(record, *model, outputs_of_row(scored, i), row["json"])))
    return out
