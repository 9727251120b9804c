"""Records and results as JSON, for producers that do not write this project's protobuf.

A JSON record:

    {"record_id": "r-1", "data_type": "wine", "event_time_ms": 1700000000000,
     "inputs": {"alcohol": 12.8, "grade": 3, "colour": "red",
                "photo": {"b64": "/9j/4AAQ..."}, "embedding": [[0.1, 0.2], [0.3, 0.4]]}}

An input is a number (an integer without a fraction or exponent stays an integer), a
string, `{"b64": "..."}` for bytes (TensorFlow Serving's REST convention), `true`/`false`
(1/0), or a rectangular nested list of numbers (a float32 tensor). `event_time_ms` is
optional. The job tells the two formats apart by the first byte: a protobuf `DataRecord`
never starts with `{`. A result for a JSON record is JSON too (`result_json`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from contract import scoring_pb2 as pb
from contract.values import MAX_TENSOR_DIMS, PyValue, fill_map, to_python

FIELDS = ("record_id", "data_type", "event_time_ms", "inputs")
INT64 = (-(1 << 63), (1 << 63) - 1)


class JsonRecordError(ValueError):
    """What is wrong with a JSON record, and where; with its id and data type when they were
    readable, so that its dead letter names them."""

    record_id: str = ""
    data_type: str = ""


RECORD_FORMATS = ("auto", "protobuf", "json")  # the job's --record-format


def is_json(raw: bytes) -> bool:
    return raw[:1] == b"{"


def decode_record(raw: bytes, record_format: str = "auto") -> tuple[pb.DataRecord, bool]:
    """The record, and whether it came as JSON. Raises JsonRecordError for bad JSON and
    protobuf's DecodeError for bytes that are not a DataRecord."""
    if record_format == "json" or (record_format == "auto" and is_json(raw)):
        return record_from_json(raw), True
    return pb.DataRecord.FromString(raw), False


def record_from_json(raw: bytes) -> pb.DataRecord:
    doc = _document(raw)
    try:
        return _record(doc)
    except JsonRecordError as err:
        err.record_id, err.data_type = (v if isinstance(v := doc.get(k), str) else "" for k in ("record_id", "data_type"))
        raise


def _record(doc: dict) -> pb.DataRecord:
    unknown = sorted(set(doc) - set(FIELDS))
    if unknown:
        raise JsonRecordError(f"unknown field(s) {unknown}: a JSON record has {list(FIELDS)}")
    record = pb.DataRecord(record_id=_text(doc, "record_id"), data_type=_text(doc, "data_type"),
                           event_time_ms=_event_time(doc.get("event_time_ms", 0)))
    inputs = doc.get("inputs", {})
    if not isinstance(inputs, dict):
        raise JsonRecordError(f"'inputs' is {_kind(inputs)}: it must be an object of named inputs")
    fill_map(record.inputs, {name: input_value(value, f"inputs.{name}") for name, value in inputs.items()})
    return record


def input_value(value: Any, where: str) -> PyValue:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise JsonRecordError(f"{where} is {_short(value)}: integers must fit in 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):  # 1e999 parses as inf
            raise JsonRecordError(f"{where} is a number too large for a 64-bit float")
        return value
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return _b64(value, where)
    if isinstance(value, list):
        return _tensor(value, where)
    raise JsonRecordError(f"{where} is {_kind(value)}: send a number, string, {{\"b64\": ...}} or list, "
                          "or leave the input out")


def result_json(record: pb.DataRecord, name: str, version: int, outputs: Mapping[str, PyValue],
                scoring_time_ms: int) -> bytes:
    """The result for a JSON record, the fields named as in a `ScoringResult`."""
    return json.dumps({
        "record_id": record.record_id, "data_type": record.data_type, "model_name": name,
        "model_version": version, "outputs": {k: output_value(v) for k, v in outputs.items()},
        "event_time_ms": record.event_time_ms, "scoring_time_ms": scoring_time_ms,
    }, ensure_ascii=False, allow_nan=False).encode()


def output_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def read_result(value: bytes) -> pb.ScoringResult:
    """A result on the scores topic, in either format, as a `ScoringResult`."""
    if not is_json(value):
        return pb.ScoringResult.FromString(value)
    doc = json.loads(value)
    outputs = doc.pop("outputs", {})
    message = pb.ScoringResult(**doc)
    fill_map(message.outputs, {k: input_value(v, f"outputs.{k}") for k, v in outputs.items()})
    return message


def record_as_json(record: pb.DataRecord) -> bytes:
    """A `DataRecord` written as a JSON record (for senders and tests)."""
    inputs = {k: output_value(to_python(v)) for k, v in record.inputs.items()}
    doc = {"record_id": record.record_id, "data_type": record.data_type, "inputs": inputs}
    if record.event_time_ms:
        doc["event_time_ms"] = record.event_time_ms
    return json.dumps(doc, ensure_ascii=False).encode()


# ---- the pieces ---------------------------------------------------------------------------------
def _document(raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise JsonRecordError(f"JSON record is not UTF-8: byte {err.start} is 0x{raw[err.start]:02x}") from err
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise JsonRecordError(f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from err
    except RecursionError as err:
        raise JsonRecordError("JSON nested too deep to read") from err
    except JsonRecordError:
        raise
    except ValueError as err:  # an integer of more digits than Python converts (4,300)
        raise JsonRecordError(f"JSON holds a number too long to read: {str(err).split(';')[0]}") from err
    if not isinstance(doc, dict):
        raise JsonRecordError(f"a JSON record is an object, this is {_kind(doc)}")
    return doc


def _no_constant(name: str):
    raise JsonRecordError(f"{name} is not a JSON number: only finite numbers can be scored")


def _text(doc: dict, name: str) -> str:
    value = doc.get(name, "")
    if not isinstance(value, str):
        raise JsonRecordError(f"'{name}' is {_kind(value)}: it must be a string")
    return value


def _event_time(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64[1]:
        raise JsonRecordError(f"'event_time_ms' is {_short(value)}: it must be epoch milliseconds, an integer")
    return value


def _b64(value: dict, where: str) -> bytes:
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise JsonRecordError(f"{where} is an object: the only object input is {{\"b64\": \"<base64>\"}} for bytes")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError) as err:
        raise JsonRecordError(f"{where}.b64 is not base64: {err}") from err


def _tensor(value: list, where: str) -> np.ndarray:
    shape, cells = _shape(value, where, 0)
    bad = next((i for i, c in enumerate(cells) if isinstance(c, bool) or not isinstance(c, int | float)), None)
    if bad is not None:  # an index: the cell itself may be null
        raise JsonRecordError(f"{where} holds {_kind(cells[bad])}: a list input is a tensor of numbers")
    array = np.asarray(cells, dtype=np.float64).reshape(shape)
    if not np.isfinite(array).all() or np.abs(array).max(initial=0) > np.finfo(np.float32).max:
        raise JsonRecordError(f"{where} holds a number too large for a float32 tensor")
    return array.astype(np.float32)


def _shape(value: list, where: str, depth: int) -> tuple[tuple[int, ...], list]:
    """The shape of a nested list and its cells, row-major; refuses ragged lists."""
    if depth >= MAX_TENSOR_DIMS:
        raise JsonRecordError(f"{where} is nested deeper than {MAX_TENSOR_DIMS} levels")
    if not value or not isinstance(value[0], list):
        if any(isinstance(v, list) for v in value):
            raise JsonRecordError(f"{where} mixes lists and numbers at depth {depth + 1}")
        return (len(value),), value
    shapes, cells = [], []
    for i, row in enumerate(value):
        if not isinstance(row, list):
            raise JsonRecordError(f"{where}[{i}] is {_kind(row)}, its neighbours are lists")
        shape, row_cells = _shape(row, f"{where}[{i}]", depth + 1)
        shapes.append(shape)
        cells += row_cells
    odd = next((i for i, s in enumerate(shapes) if s != shapes[0]), None)
    if odd is not None:
        raise JsonRecordError(f"{where} is ragged: {where}[0] has shape {list(shapes[0])}, "
                              f"{where}[{odd}] has {list(shapes[odd])}")
    return (len(value), *shapes[0]), cells


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    if isinstance(value, int) and value.bit_length() > 100:
        return f"an integer of {value.bit_length()} bits"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
