"""Conversion between the protobuf `Value` of records and results, and Python values.

Inputs and outputs on the scoring path are plain Python: float, int, str, bytes, or a
float32 numpy array for a tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from contract import scoring_pb2 as pb

PyValue = float | int | str | bytes | np.ndarray
MAX_TENSOR_DIMS = 8


def to_python(value: pb.Value) -> PyValue:
    kind = value.WhichOneof("kind")
    if kind == "tensor_value":
        t = value.tensor_value
        shape = tuple(t.shape)
        # math.prod of Python ints: numpy's int64 product wraps, and a shape like
        # [2**33, 2**31] would "match" an empty tensor.
        if len(shape) > MAX_TENSOR_DIMS or min(shape, default=0) < 0 or math.prod(shape) != len(t.values):
            raise ValueError(f"tensor shape {list(shape)[:MAX_TENSOR_DIMS + 1]} does not fit its "
                             f"{len(t.values)} values (at most {MAX_TENSOR_DIMS} dimensions, none negative)")
        return np.asarray(t.values, dtype=np.float32).reshape(shape)
    if kind is None:
        raise ValueError("value has no kind set")
    return getattr(value, kind)


def to_proto(value: PyValue | np.generic) -> pb.Value:
    message = pb.Value()
    set_value(message, value)
    return message


def set_value(target: pb.Value, value: PyValue | np.generic) -> None:
    """Set an empty `Value` in place (a map entry, say: no message built and copied)."""
    kind, item = value_kind(value)
    if kind == "tensor_value":
        target.tensor_value.shape.extend(item.shape)
        target.tensor_value.values.extend(item.astype(np.float32).ravel().tolist())
    else:
        setattr(target, kind, item)


def value_kind(value: PyValue | np.generic) -> tuple[str, Any]:
    """Which of Value's kinds holds `value`, and the value as that kind takes it."""
    if isinstance(value, np.ndarray) and value.ndim > 0:
        if value.dtype.kind in "OSU":
            raise TypeError("string tensors are not supported as outputs")
        return "tensor_value", value
    if isinstance(value, np.ndarray | np.generic):  # a 0-d array or a numpy scalar
        value = value.item()
    if isinstance(value, bool | int):
        return "int64_value", int(value)
    if isinstance(value, float):
        return "double_value", value
    if isinstance(value, str):
        return "string_value", value
    if isinstance(value, bytes):
        return "bytes_value", value
    raise TypeError(f"cannot encode {type(value).__name__} as a Value")


def inputs_of(record: pb.DataRecord) -> dict[str, PyValue]:
    # to_python inlined: this runs for every input of every record (~40% of the job's own
    # Python time per record before, with 13 inputs).
    inputs, values = {}, record.inputs
    for name in values:  # upb's map has no native items(): abc's goes through Python per item
        value = values[name]
        kind = value.WhichOneof("kind")
        if kind is None or kind == "tensor_value":
            inputs[name] = to_python(value)
        else:
            inputs[name] = getattr(value, kind)
    return inputs


def fill_map(target, values: Mapping[str, PyValue]) -> None:
    """Copy Python values into a protobuf `map<string, Value>` field."""
    for name, v in values.items():
        set_value(target[name], v)


def make_record(record_id: str, data_type: str, inputs: Mapping[str, PyValue | list],
                event_time_ms: int = 0) -> pb.DataRecord:
    """A DataRecord from Python inputs; lists become float32 tensors."""
    record = pb.DataRecord(record_id=record_id, data_type=data_type, event_time_ms=event_time_ms)
    fill_map(record.inputs, {
        k: np.asarray(v, dtype=np.float32) if isinstance(v, list) else v for k, v in inputs.items()
    })
    return record


def plain(value):
    """A numpy scalar or array as plain Python, for JSON (`json.dumps(default=plain)`)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")
