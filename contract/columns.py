"""A batch of one data type's records as Arrow columns: the form the columnar path hands
Python (docs/columnar.md). The JVM's RecordBatcher will write the same schema; `to_columns`
is the reference it is checked against.

Fixed columns: record_id, event_time_ms, json (the record came as JSON), digest (SHA-256,
first 16 bytes) and original (the bytes). Then per input name one column per kind that some
row sent: `<name>` float64, `<name>#int` int64, `<name>#str` utf8, `<name>#bytes` binary,
`<name>#tensor` list<float32> with `<name>#shape` list<int64>; null where a row sent
another kind or nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contract import scoring_pb2 as pb
from contract.values import value_kind

FIXED = ("record_id", "event_time_ms", "json", "digest", "original")
# Value's oneof kind -> (column suffix, Arrow type)
KINDS = {
    "double_value": ("", pa.float64()),
    "int64_value": ("#int", pa.int64()),
    "string_value": ("#str", pa.string()),
    "bytes_value": ("#bytes", pa.binary()),
    "tensor_value": ("#tensor", pa.list_(pa.float32())),
}
SHAPE = "#shape"
DATA_TYPE_KEY = b"data_type"


def digest(raw: bytes) -> bytes:
    """The first 16 bytes of the record's SHA-256 (the JVM's RecordBatcher computes the same)."""
    return hashlib.sha256(raw).digest()[:16]


@dataclass(frozen=True)
class Arrived:
    """One record as read: its parsed form, whether it came as JSON, its bytes."""

    record: pb.DataRecord
    json: bool
    original: bytes


def to_columns(data_type: str, rows: Sequence[Arrived]) -> pa.RecordBatch:
    """The records as one Arrow record batch (the schema above)."""
    arrays: dict[str, list] = {
        "record_id": [r.record.record_id for r in rows],
        "event_time_ms": [r.record.event_time_ms for r in rows],
        "json": [r.json for r in rows],
        "digest": [digest(r.original) for r in rows],
        "original": [r.original for r in rows],
    }
    types = {"record_id": pa.string(), "event_time_ms": pa.int64(), "json": pa.bool_(),
             "digest": pa.binary(16), "original": pa.binary()}
    for name in sorted({n for r in rows for n in r.record.inputs}):
        for kind, (suffix, arrow_type) in KINDS.items():
            values = [_value(r.record.inputs[name], kind) if name in r.record.inputs else None for r in rows]
            if all(v is None for v in values):
                continue
            arrays[name + suffix], types[name + suffix] = [v[0] if v else None for v in values], arrow_type
            if kind == "tensor_value":
                arrays[name + SHAPE] = [v[1] if v else None for v in values]
                types[name + SHAPE] = pa.list_(pa.int64())
    schema = pa.schema([pa.field(n, types[n]) for n in arrays], metadata={DATA_TYPE_KEY: data_type.encode()})
    return pa.RecordBatch.from_arrays([pa.array(arrays[n], types[n]) for n in arrays], schema=schema)


def _value(value: pb.Value, kind: str):
    if value.WhichOneof("kind") != kind:
        return None
    if kind == "tensor_value":
        return (list(value.tensor_value.values), list(value.tensor_value.shape))
    return (getattr(value, kind),)


def data_type_of(batch: pa.RecordBatch) -> str:
    return (batch.schema.metadata or {}).get(DATA_TYPE_KEY, b"").decode()


def to_ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.RecordBatch:
    """The one record batch of an Arrow IPC stream."""
    with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
        batches = list(reader)
    if len(batches) != 1:
        raise ValueError(f"an Arrow stream of {len(batches)} record batches: a batch is one")
    return batches[0]


# ---- what Python sends back: the rows' outcomes and outputs -------------------------------
OUTCOME = ("model_name", "model_version", "stage", "reason")


def outcomes_to_columns(batch: pa.RecordBatch, models: Sequence[tuple[str, int]], stages: Sequence[str],
                        reasons: Sequence[str | None], outputs: dict[str, Sequence]) -> pa.RecordBatch:
    """The scored batch: the input batch's record_id, event_time_ms and json (by reference);
    per row the model that scored it (a canary splits a batch), the stage and reason of a
    failure (null: scored) and, for failed rows only, the original bytes; then the outputs,
    one column per name and kind as the inputs are."""
    reasons, stages = list(reasons), list(stages)
    columns: dict[str, pa.Array] = {}
    for name in sorted(outputs):
        encoded, unwritable = _output_columns(name, outputs[name])
        columns.update(encoded)
        for row, err in unwritable.items():
            if reasons[row] is None:
                reasons[row] = f"the model's outputs cannot be written as a ScoringResult: {err}"
                stages[row] = "score"
    failed = pa.array([r is not None for r in reasons])
    arrays = {
        "record_id": batch.column("record_id"), "event_time_ms": batch.column("event_time_ms"),
        "json": batch.column("json"),
        "original": pc.if_else(failed, batch.column("original"), pa.nulls(batch.num_rows, pa.binary())),
        "model_name": pa.array([m[0] for m in models], pa.string()),
        "model_version": pa.array([m[1] for m in models], pa.int64()),
        "stage": pa.array([s or None for s in stages], pa.string()),
        "reason": pa.array(reasons, pa.string()),
        **columns,
    }
    return pa.RecordBatch.from_arrays(list(arrays.values()), names=list(arrays),
                                      metadata=batch.schema.metadata)


def _output_columns(name: str, values: Sequence) -> tuple[dict[str, pa.Array], dict[int, Exception]]:
    """The output's columns, and the rows whose value no Value can hold (and why)."""
    if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype.kind in "fiub":
        kind = "double_value" if values.dtype.kind == "f" else "int64_value"
        suffix, arrow_type = KINDS[kind]
        return {name + suffix: pa.array(values, arrow_type)}, {}
    if isinstance(values, np.ndarray) and values.ndim > 1 and values.dtype.kind in "fiub":
        return _tensor_columns(name, values), {}
    by_kind: dict[str, list] = {kind: [None] * len(values) for kind in KINDS}
    shapes: list = [None] * len(values)
    unwritable: dict[int, Exception] = {}
    for row, value in enumerate(values):
        if value is None:
            continue
        try:
            kind, item = value_kind(value)
        except TypeError as err:
            unwritable[row] = err
            continue
        if kind == "tensor_value":
            item, shapes[row] = item.astype(np.float32).ravel(), list(item.shape)
        by_kind[kind][row] = item
    out = {}
    for kind, column in by_kind.items():
        if any(v is not None for v in column):
            suffix, arrow_type = KINDS[kind]
            out[name + suffix] = pa.array(column, arrow_type)
            if kind == "tensor_value":
                out[name + SHAPE] = pa.array(shapes, pa.list_(pa.int64()))
    return out, unwritable


def _tensor_columns(name: str, values: np.ndarray) -> dict[str, pa.Array]:
    """Rows of one tensor shape, without a loop: the values flat, the shape repeated."""
    rows, shape = len(values), list(values.shape[1:])
    size = int(np.prod(shape))
    flat = pa.array(values.astype(np.float32, copy=False).ravel())
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * size)
    dims = pa.array(np.tile(np.asarray(shape, np.int64), rows))
    return {name + "#tensor": pa.ListArray.from_arrays(offsets, flat),
            name + SHAPE: pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * len(shape)), dims)}


def outputs_of_row(batch: pa.RecordBatch, row: int) -> dict[str, object]:
    """One row's outputs, as contract.values.to_python gives them (tensors as arrays)."""
    out: dict[str, object] = {}
    for index, field in enumerate(batch.schema):
        name, _, suffix = field.name.partition("#")
        if field.name in FIXED + OUTCOME or suffix == "shape":
            continue
        value = batch.column(index)[row].as_py()
        if value is None:
            continue
        if suffix == "tensor":
            value = np.asarray(value, np.float32).reshape(batch.column(name + SHAPE)[row].as_py())
        out[name] = value
    return out
