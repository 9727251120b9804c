"""Bad records, one kind at a time for the named cases, and mixed with good ones for the fuzz:
protobuf records and JSON ones (malformed, wrong types, huge numbers, deep nesting, non-UTF-8
bytes, NaN), and a quarter of the good ones as JSON.

`scorable` is the oracle: the spec of a record the job must score (it parses, has an id
and the served data type, every model input is a finite number, every value converts).
"""

from __future__ import annotations

import base64
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from contract import scoring_pb2 as pb
from contract.json_records import record_as_json
from contract.values import make_record
from faults.outputs import DEAD, SCORE, Sent, raw

Row = dict[str, float]


def record(record_id: str, data_type: str, row: dict) -> pb.DataRecord:
    return make_record(record_id, data_type, row, 0)


def scorable(value: bytes, data_type: str, fields: list[str], max_record_bytes: int) -> bool:
    if len(value) > max_record_bytes:
        return False
    if value[:1] == b"{":
        return json_scorable(value, data_type, fields)
    try:
        r = pb.DataRecord.FromString(value)
    except DecodeError:
        return False
    if not r.record_id or r.data_type != data_type:
        return False
    for v in r.inputs.values():
        kind = v.WhichOneof("kind")
        if kind is None or (kind == "tensor_value" and not tensor_fits(v.tensor_value)):
            return False
    for name in fields:
        v = r.inputs.get(name)
        kind = v.WhichOneof("kind") if v is not None else None
        if kind not in ("double_value", "int64_value"):
            return False
        if kind == "double_value" and not math.isfinite(v.double_value):
            return False
    return True


def tensor_fits(t: pb.Tensor) -> bool:
    """The contract's tensor: at most 8 dimensions, none negative, as many values as they hold."""
    return len(t.shape) <= 8 and min(t.shape, default=0) >= 0 and math.prod(t.shape) == len(t.values)


def json_scorable(value: bytes, data_type: str, fields: list[str]) -> bool:
    """The JSON record spec (contract/json_records.py's docstring), restated independently for
    the records the fuzz makes: every input a finite number (integers within 64 bits)."""
    def refuse(constant: str):
        raise ValueError(constant)

    try:
        doc = json.loads(value.decode("utf-8"), parse_constant=refuse)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    if not isinstance(doc, dict) or set(doc) - {"record_id", "data_type", "event_time_ms", "inputs"}:
        return False
    event_time = doc.get("event_time_ms", 0)
    if type(event_time) is not int or event_time < 0 or not isinstance(doc.get("inputs", {}), dict):
        return False
    if not isinstance(doc.get("record_id"), str) or not doc["record_id"] or doc.get("data_type") != data_type:
        return False
    inputs = doc.get("inputs", {})
    return set(fields) <= set(inputs) and all(_json_number(v) for v in inputs.values())


def _json_number(v) -> bool:
    if isinstance(v, bool):
        return True
    if isinstance(v, int):
        return -(1 << 63) <= v < (1 << 63)
    return isinstance(v, float) and math.isfinite(v)


# ---- records with an id: dead-lettered under it ------------------------------------------------
def missing_inputs(rng: random.Random, row: Row, record_id: str, data_type: str) -> pb.DataRecord:
    dropped = set(rng.sample(sorted(row), rng.randint(1, 3)))
    return record(record_id, data_type, {k: v for k, v in row.items() if k not in dropped})


WRONG_VALUES: list[Callable[[], pb.Value]] = [
    lambda: pb.Value(string_value="strong"),
    lambda: pb.Value(bytes_value=b"\x00\x01"),
    lambda: pb.Value(tensor_value=pb.Tensor(shape=[2], values=[1.0, 2.0])),
    lambda: pb.Value(tensor_value=pb.Tensor(shape=[2, 2], values=[1.0, 2.0, 3.0])),  # shape lies
    lambda: pb.Value(),  # no kind at all
]
WRONG_TYPE_REASONS = "the model takes a|value has no kind set|does not fit its"


def wrong_type(rng: random.Random, row: Row, record_id: str, data_type: str) -> pb.DataRecord:
    r = record(record_id, data_type, row)
    r.inputs[rng.choice(sorted(row))].CopyFrom(rng.choice(WRONG_VALUES)())
    return r


def non_finite(rng: random.Random, row: Row, record_id: str, data_type: str) -> pb.DataRecord:
    value = rng.choice([math.nan, math.inf, -math.inf])
    return record(record_id, data_type, {**row, rng.choice(sorted(row)): value})


def unknown_type(rng: random.Random, row: Row, record_id: str, data_type: str) -> pb.DataRecord:
    return record(record_id, f"no-model-{rng.randrange(1000)}", row)


def no_data_type(rng: random.Random, row: Row, record_id: str, data_type: str) -> pb.DataRecord:
    return record(record_id, "", row)


# ---- bytes without a usable id: dead-lettered with them ---------------------------------------
def random_bytes(rng: random.Random, good: bytes) -> bytes:
    return rng.randbytes(rng.randint(1, 300))


def truncated(rng: random.Random, good: bytes) -> bytes:
    return good[:rng.randint(1, len(good) - 1)]


def bit_flipped(rng: random.Random, good: bytes) -> bytes:
    data = bytearray(good)
    for _ in range(rng.randint(1, 3)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def no_record_id(rng: random.Random, good: bytes) -> bytes:
    r = pb.DataRecord.FromString(good)
    r.record_id = ""
    return r.SerializeToString()


def oversize(rng: random.Random, good: bytes, size: int) -> bytes:
    r = pb.DataRecord.FromString(good)
    r.inputs["padding"].string_value = "x" * size
    return r.SerializeToString()


# ---- JSON records that cannot be scored: dead-lettered with their bytes --------------------------
def _json_text(good: bytes) -> str:
    return record_as_json(pb.DataRecord.FromString(good)).decode()


def _json_with_input(rng: random.Random, good: bytes, literal: str) -> bytes:
    """The good record as JSON with one of its inputs replaced by `literal` (JSON text)."""
    doc = json.loads(_json_text(good))
    doc["inputs"][rng.choice(sorted(doc["inputs"]))] = "__HERE__"
    return json.dumps(doc).replace('"__HERE__"', literal).encode()


def malformed_json(rng: random.Random, good: bytes) -> bytes:
    text = _json_text(good)
    cut = rng.randint(1, len(text) - 1)
    return rng.choice([text[:cut], text[:cut] + text[cut + 1:],
                       text[:cut] + rng.choice('{}[],:"') + text[cut:]]).encode()


def json_wrong_value(rng: random.Random, good: bytes) -> bytes:
    return _json_with_input(rng, good, rng.choice(
        ['null', '"12.5"', '{"x": 1}', '[[1, 2], [3]]', '[1, "a"]', '{"b64": "!!"}', '[]', '"grün"']))


def json_huge_number(rng: random.Random, good: bytes) -> bytes:
    return _json_with_input(rng, good, rng.choice(["1e400", "-1e999", str(10**30), "9" * 5000]))


def json_deep_nesting(rng: random.Random, good: bytes) -> bytes:
    depth = rng.choice([9, 40, 2000, 20000])
    return _json_with_input(rng, good, "[" * depth + "1" + "]" * depth)


def json_not_utf8(rng: random.Random, good: bytes) -> bytes:
    text = _json_text(good).encode()
    at = text.index(b'"record_id": "') + len(b'"record_id": "')
    return text[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]) + text[at:]


def json_nan(rng: random.Random, good: bytes) -> bytes:
    return _json_with_input(rng, good, rng.choice(["NaN", "Infinity", "-Infinity"]))


BY_JSON = [malformed_json, json_wrong_value, json_huge_number, json_deep_nesting, json_not_utf8, json_nan]


# ---- built to break a reader: structure at and past every limit ---------------------------------
# Each keeps the good record's id where it can, so that what is refused is dead-lettered by it.
PROTOBUF_DEPTH = 100  # protobuf's recursion limit: Python's upb and the JVM keying refuse deeper


def deep_groups(rng: random.Random, good: bytes) -> bytes:
    """Unknown group fields nested at, just past, or far past the limit (a stack overflow for a
    recursive reader), before or after the record's own fields."""
    depth = rng.choice([PROTOBUF_DEPTH - 1, PROTOBUF_DEPTH, PROTOBUF_DEPTH + 1, 5_000, 200_000])
    field = rng.choice([5, 9, 536_870_911])  # unknown to DataRecord; the largest field number
    start, end = _varint(field << 3 | 3), _varint(field << 3 | 4)
    groups = start * depth + end * depth if rng.random() < 0.8 else start * depth  # or never closed
    return groups + good if rng.random() < 0.5 else good + groups


def wire_edges(rng: random.Random, good: bytes) -> bytes:
    """A field the wire format forbids or cannot end: wire types 6 and 7, field number 0, an
    11-byte varint, a length of 2**63 or of more than is left."""
    bad = rng.choice([_varint(5 << 3 | 6), _varint(5 << 3 | 7), _varint(0 << 3 | 0) + b"\x01",
                      _varint(5 << 3 | 0) + b"\xff" * 10 + b"\x01", _varint(5 << 3 | 2) + _varint(1 << 63),
                      _varint(2 << 3 | 2) + _varint(len(good) + 10) + b"wine",
                      b"\x80" * rng.randint(1, 12)])
    return good + bad if rng.random() < 0.7 else bad + good


def tensor_shapes(rng: random.Random, row: Row, record_id: str, data_type: str) -> pb.DataRecord:
    """A tensor input whose shape does not hold its values: a product past 2**64 (that wraps to 0
    in int64 arithmetic), negative dimensions that multiply out right, too many dimensions."""
    r = record(record_id, data_type, row)
    t = r.inputs["embedding"].tensor_value
    shape, values = rng.choice([([1 << 33, 1 << 31], 0), ([1 << 32, 1 << 32, 1 << 32], 0), ([-1, -4], 4),
                                ([1] * 9, 1), ([1] * 200, 1), ([2, 3], 5), ([(1 << 63) - 1, 2], 2)])
    t.shape.extend(shape)
    t.values.extend([0.5] * values)
    return r


def number_limits(rng: random.Random, row: Row, record_id: str, data_type: str) -> pb.DataRecord:
    """Every model input at or past a limit of its type: the model refuses or scores them, and
    nothing in between breaks."""
    limits = [float("inf"), -float("inf"), float("nan"), 1.7976931348623157e308, -5e-324, 0.0, -0.0]
    r = record(record_id, data_type, row)
    for name in row:
        if rng.random() < 0.5:
            r.inputs[name].double_value = rng.choice(limits)
        else:
            r.inputs[name].int64_value = rng.choice([(1 << 63) - 1, -(1 << 63), 0, -1])
    return r


def json_limits(rng: random.Random, good: bytes) -> bytes:
    """JSON at and past the readers' limits: object nesting around Jackson's 1,000 and Python's
    recursion limit, 64-bit integers and one past, a float just past the largest, thousands of inputs."""
    choice = rng.randrange(4)
    if choice == 0:
        depth = rng.choice([999, 1000, 1001, 3000])
        return _json_with_input(rng, good, '{"b64": ' * depth + '""' + "}" * depth)
    if choice == 1:
        return _json_with_input(rng, good, rng.choice([str(1 << 63), str(-(1 << 63) - 1), str((1 << 63) - 1),
                                                       "1.7976931348623159e308", "-0.0", "5e-324"]))
    if choice == 2:
        doc = json.loads(_json_text(good))
        doc["inputs"].update({f"extra-{i}": i for i in range(rng.choice([1_000, 20_000]))})
        return json.dumps(doc).encode()
    text = _json_text(good)
    return ("[" * 50_000 if rng.random() < 0.5 else '{"a":' * 50_000).encode() + text.encode()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def bad_json(rng: random.Random, good: bytes) -> bytes:
    return rng.choice(BY_JSON)(rng, good)


def not_a_jpeg(record_id: str, data_type: str) -> pb.DataRecord:
    """A digits record whose image does not decode: the model throws on it."""
    return record(record_id, data_type, {"image_b64": base64.urlsafe_b64encode(b"not a jpeg").decode()})


# ---- the fuzz ------------------------------------------------------------------------------------
BY_ID = [missing_inputs, wrong_type, non_finite, unknown_type, no_data_type, tensor_shapes, number_limits]
BY_STRUCTURE = [deep_groups, wire_edges, json_limits]
BY_BYTES = [random_bytes, truncated, bit_flipped, no_record_id, *BY_JSON, *BY_STRUCTURE]


@dataclass
class Fuzz:
    payloads: list[bytes] = field(default_factory=list)
    good: list[Sent] = field(default_factory=list)
    bad: list[Sent] = field(default_factory=list)


def fuzz(rows: list[Row], data_type: str, prefix: str, n_bad: int, n_good: int,
         max_record_bytes: int, seed: int = 6) -> Fuzz:
    """`n_bad` bad records of every kind and `n_good` good ones, shuffled."""
    rng = random.Random(seed)
    fields = sorted(rows[0])
    out, seen = Fuzz(), set()
    for i in range(n_good):
        good = record(f"{prefix}-good-{i}", data_type, rows[i % len(rows)])
        out.payloads.append(record_as_json(good) if i % 4 == 0 else good.SerializeToString())
        out.good.append(Sent(f"{prefix}-good-{i}", SCORE))
    i = 0
    while len(out.bad) < n_bad:
        i += 1
        row = rows[rng.randrange(len(rows))]
        if i % 500 == 0:  # a few over-size ones
            value = oversize(rng, record(f"{prefix}-big-{i}", data_type, row).SerializeToString(),
                             max_record_bytes)
            item = raw([value], max_record_bytes)[0]
        elif rng.random() < 0.5:
            value = rng.choice(BY_ID)(rng, row, f"{prefix}-bad-{i}", data_type).SerializeToString()
            item = Sent(f"{prefix}-bad-{i}", DEAD)
        else:
            good = record(f"{prefix}-base-{i}", data_type, row).SerializeToString()
            value = rng.choice(BY_BYTES)(rng, good)
            item = raw([value], max_record_bytes)[0]  # a deep nesting can be over the size limit
        if item.key in seen or scorable(value, data_type, fields, max_record_bytes):
            continue  # a mutation that left a good record, or one whose dead letter we could not tell apart
        seen.add(item.key)
        out.payloads.append(value)
        out.bad.append(item)
    rng.shuffle(out.payloads)
    return out
