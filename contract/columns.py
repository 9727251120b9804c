"""A batch of one data type's records as Arrow columns: the form the columnar path hands
Python (docs/columnar.md). The JVM's RecordBatcher will write the same schema; `to_columns`
is the reference it is checked against.

Fixed columns: record_id, event_time_ms, json (the record came as JSON), digest (BLAKE2b-128
of its bytes) and original (the bytes). Then per input name one column per kind that some
row sent: `<name>` float64, `<name>#int` int64, `<name>#str` utf8, `<name>#bytes` binary,
`<name>#tensor` list<float32> with `<name>#shape` list<int64>; null where a row sent
another kind or nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from contract import scoring_pb2 as pb

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
    return hashlib.blake2b(raw, digest_size=16).digest()


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
