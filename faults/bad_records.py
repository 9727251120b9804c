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
from faults.outputs import DEAD, SCORE, Sent, digest, raw

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
        if kind is None or (kind == "tensor_value" and
                            math.prod(v.tensor_value.shape) != len(v.tensor_value.values)):
            return False
    for name in fields:
        v = r.inputs.get(name)
        kind = v.WhichOneof("kind") if v is not None else None
        if kind not in ("double_value", "int64_value"):
            return False
        if kind == "double_value" and not math.isfinite(v.double_value):
            return False
    return True


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
WRONG_TYPE_REASONS = "the model takes a|value has no kind set|does not match its"


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


def bad_json(rng: random.Random, good: bytes) -> bytes:
    return rng.choice(BY_JSON)(rng, good)


def not_a_jpeg(record_id: str, data_type: str) -> pb.DataRecord:
    """A digits record whose image does not decode: the model throws on it."""
    return record(record_id, data_type, {"image_b64": base64.urlsafe_b64encode(b"not a jpeg").decode()})


# ---- the fuzz ------------------------------------------------------------------------------------
BY_ID = [missing_inputs, wrong_type, non_finite, unknown_type, no_data_type]
BY_BYTES = [random_bytes, truncated, bit_flipped, no_record_id, *BY_JSON]


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
            item = Sent(digest(value), DEAD, by_bytes=True)
        if value in seen or scorable(value, data_type, fields, max_record_bytes):
            continue  # a mutation that left a good record, or bytes sent already
        seen.add(value)
        out.payloads.append(value)
        out.bad.append(item)
    rng.shuffle(out.payloads)
    return out
