"""Bad records, one kind at a time for the named cases, and mixed with good ones for the fuzz.

`scorable` is the oracle: the spec of a record the job must score (it parses, has an id
and the served data type, every model input is a finite number, every value converts).
"""

from __future__ import annotations

import base64
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from contract import scoring_pb2 as pb
from contract.values import make_record
from faults.outputs import DEAD, SCORE, Sent, digest, raw

Row = dict[str, float]


def record(record_id: str, data_type: str, row: dict) -> pb.DataRecord:
    return make_record(record_id, data_type, row, 0)


def scorable(value: bytes, data_type: str, fields: list[str], max_record_bytes: int) -> bool:
    if len(value) > max_record_bytes:
        return False
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


def not_a_jpeg(record_id: str, data_type: str) -> pb.DataRecord:
    """A digits record whose image does not decode: the model throws on it."""
    return record(record_id, data_type, {"image_b64": base64.urlsafe_b64encode(b"not a jpeg").decode()})


# ---- the fuzz ------------------------------------------------------------------------------------
BY_ID = [missing_inputs, wrong_type, non_finite, unknown_type, no_data_type]
BY_BYTES = [random_bytes, truncated, bit_flipped, no_record_id]


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
        out.payloads.append(record(f"{prefix}-good-{i}", data_type, rows[i % len(rows)]).SerializeToString())
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
