"""The columnar path's JVM side (jvm/operators: RecordBatcher's reader and batches, WriteResults'
writer) against Python's own reader and writer, on the same bytes: the JVM batches a record
only when Python's reader reads it to the same columns (contract.columns.to_columns), leaves
every other record to Python as it came, and writes from a scored batch the messages
scoring.messages.from_columns writes."""

from __future__ import annotations

import json
import math
import random
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from contract import scoring_pb2 as pb
from contract.columns import Arrived, from_ipc, outcomes_to_columns, to_columns, to_ipc
from contract.json_records import read_result, record_as_json
from contract.values import make_record
from jobs.jars import operators_jar
from scoring import messages
from scoring.records import UnreadableRecord, read_record
from tests.test_columns import random_records
from tests.test_keying import HOSTILE_MAX_BYTES, MAX_BYTES, edge_cases, fuzzed, hostile

BATCH, RECORD = 1, 2

# Runs in a child process: PyFlink's gateway JVM would otherwise outlive the test.
JVM = """
import json, sys
from pyflink.java_gateway import get_gateway
from pyflink.datastream import StreamExecutionEnvironment
StreamExecutionEnvironment.get_execution_environment().add_jars(sys.argv[1])
gateway = get_gateway()
check = gateway.jvm.io.github.flinkscoring.ColumnarCheck
job = json.load(open(sys.argv[2]))
items = [bytes.fromhex(h) for h in job["items"]]
array = gateway.new_array(gateway.jvm.byte, len(items), 0)
for i, item in enumerate(items):
    array[i] = item
if job["call"] == "batches":
    out = check.batches(job["format"], job["max_bytes"], job["batch_size"], array)
    json.dump([bytes(x).hex() for x in out], open(sys.argv[3], "w"))
else:
    json.dump([[bytes(x).hex() for x in check.write(item, job["now_ms"])] for item in items], open(sys.argv[3], "w"))
"""


def on_jvm(tmp_path: Path, **job) -> list:
    request, answer = tmp_path / "request.json", tmp_path / "answer.json"
    job["items"] = [i.hex() for i in job["items"]]
    request.write_text(json.dumps(job))
    subprocess.run([sys.executable, "-c", JVM, operators_jar().as_uri(), str(request), str(answer)],
                   capture_output=True, text=True, timeout=300, check=True)
    return json.loads(answer.read_text())


def jvm_batches(tmp_path: Path, records: list[bytes], batch_size: int = 50, record_format: str = "auto",
                max_bytes: int = MAX_BYTES) -> list[tuple[str, int, bytes]]:
    """(data type, tag, payload) per element the JVM's batcher emits."""
    out = []
    for h in on_jvm(tmp_path, call="batches", format=record_format, max_bytes=max_bytes, batch_size=batch_size,
                    items=records):
        framed = bytes.fromhex(h)
        (n,) = struct.unpack(">i", framed[:4])
        out.append((framed[4:4 + n].decode(), framed[4 + n], framed[5 + n:]))
    return out


def python_read(raw: bytes, key: str, max_bytes: int = MAX_BYTES, record_format: str = "auto") -> Arrived | None:
    try:
        record, as_json = read_record(raw, key, max_bytes, record_format)
    except UnreadableRecord:
        return None
    return Arrived(record, as_json, raw)


def comparable(rows: list[dict]) -> list[dict]:
    """NaN equal to NaN (a flipped byte makes some doubles NaN)."""
    def fix(v):
        if isinstance(v, float) and math.isnan(v):
            return "NaN"
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v
    return [{k: fix(v) for k, v in row.items()} for row in rows]


def well_formed(rnd: random.Random, n: int) -> list[bytes]:
    """Records of every input kind, half as JSON, over three data types: all the JVM must read."""
    out = []
    for i, record in enumerate(random_records(n, seed=rnd.randrange(1 << 30))):
        values = {k: v for k, v in ((k, record.inputs[k]) for k in record.inputs)
                  if v.WhichOneof("kind") != "tensor_value" or _fits(v.tensor_value)}
        rec = pb.DataRecord(record_id=f"w{i}-é", data_type=rnd.choice(["wine", "beer", "grün"]),
                            event_time_ms=rnd.randrange(1 << 40))
        for k, v in values.items():
            numbers = [v.double_value] if v.WhichOneof("kind") == "double_value" else v.tensor_value.values
            if i % 2 and not all(math.isfinite(x) for x in numbers):
                continue  # JSON has no NaN
            rec.inputs[k].CopyFrom(v)
        out.append(record_as_json(rec) if i % 2 else rec.SerializeToString())
    return out


def _fits(t: pb.Tensor) -> bool:
    return math.prod(t.shape) == len(t.values)


def check_batches(tmp_path: Path, samples: list[bytes], max_bytes: int = MAX_BYTES, record_format: str = "auto",
                  batch_size: int = 50) -> Counter:
    elements = jvm_batches(tmp_path, samples, batch_size, record_format, max_bytes)
    seen: Counter = Counter()
    kinds: Counter = Counter()
    for key, tag, payload in elements:
        if tag == RECORD:
            seen[payload] += 1
            kinds["left to python"] += 1
            kinds["python reads it"] += python_read(payload, key, max_bytes, record_format) is not None
            continue
        assert tag == BATCH
        batch = from_ipc(payload)
        assert 0 < batch.num_rows <= batch_size
        arrived = [python_read(raw, key, max_bytes, record_format) for raw in batch.column("original").to_pylist()]
        assert None not in arrived, "the JVM batched a record Python's reader refuses"
        expected = to_columns(key, arrived)
        assert batch.schema.equals(expected.schema, check_metadata=True), (batch.schema, expected.schema)
        assert comparable(batch.to_pylist()) == comparable(expected.to_pylist())
        for raw in batch.column("original").to_pylist():
            seen[raw] += 1
        kinds["batched"] += batch.num_rows
    assert seen == Counter(samples), "a record was lost or sent twice"
    return kinds


def test_the_jvm_batches_what_python_reads_to_the_same_columns(tmp_path):
    rnd = random.Random(5)
    good = well_formed(rnd, 600)
    samples = good + edge_cases() + fuzzed(rnd, 1500)
    rnd.shuffle(samples)
    kinds = check_batches(tmp_path, samples)
    # Not vacuous: every well-formed record was read on the JVM, and the fuzz reached Python.
    assert kinds["batched"] >= len(good) and kinds["left to python"] > 300, kinds
    batched_good = check_batches(tmp_path, good)
    assert batched_good["batched"] == len(good) and not batched_good["left to python"]


def test_hostile_records_go_to_python_as_they_came_and_nothing_throws(tmp_path):
    kinds = check_batches(tmp_path, hostile(random.Random(11), 600), max_bytes=HOSTILE_MAX_BYTES)
    assert kinds["left to python"] > 100 and kinds["batched"] > 50, kinds


@pytest.mark.parametrize("record_format", ["json", "protobuf"])
def test_a_forced_format_reads_only_that_format(tmp_path, record_format):
    records = well_formed(random.Random(3), 40)
    kinds = check_batches(tmp_path, records, record_format=record_format)
    assert kinds["batched"] == 20 and kinds["left to python"] == 20, kinds


def test_json_records_the_jvm_leaves_to_python(tmp_path):
    """What Python's reader takes differently (the last of duplicate keys, big integers as
    tensor cells...) or refuses: never read on the JVM."""
    odd = [
        b'{"record_id": "r", "data_type": "wine", "inputs": {"a": 1, "a": 2}}',
        b'{"record_id": "r", "data_type": "wine", "inputs": {"a": [1, 99999999999999999999]}}',
        b'{"record_id": "r", "data_type": "wine", "inputs": {"a": {"b64": "YQ"}}}',
        b'{"record_id": "r", "data_type": "wine", "inputs": {"a": [[1], [2, 3]]}}',
        b'{"record_id": "r", "data_type": "wine", "inputs": {"a": 1e999}}',
        b'{"record_id": "r", "data_type": "wine", "inputs": {"a#int": 1}}',
        b'{"record_id": "r", "data_type": "wine", "inputs": {"a": "\\ud800"}}',
        b'{"record_id": "r", "data_type": "wine", "inputs": {"a": null}}',
        b'{"record_id": "r", "data_type": "wine", "event_time_ms": -1}',
        b'\xef\xbb\xbf{"record_id": "r", "data_type": "wine"}',
        b'{"record_id": "r", "data_type": "wine", "inputs": {"a": [[[[[[[[[1]]]]]]]]]}}',
    ]
    kinds = check_batches(tmp_path, odd, record_format="json")
    assert kinds["left to python"] == len(odd), kinds


def test_a_tensor_of_every_rank_and_each_scalar_limit_reads_as_python_reads_it(tmp_path):
    inputs = {"t0": np.zeros((0,), np.float32), "t8": np.ones((1,) * 8, np.float32),
              "t": np.arange(6, dtype=np.float32).reshape(2, 3) / 3, "big": 2 ** 63 - 1, "small": -2 ** 63,
              "tiny": 5e-324, "neg0": -0.0, "s": "", "b": b"", "u": "\U0001f377 grün"}
    record = make_record("r", "wine", inputs, 1)
    samples = [record.SerializeToString(), record_as_json(record)]
    kinds = check_batches(tmp_path, samples)
    assert kinds["batched"] == 2, kinds


def _map_entry(key: str, value: float) -> bytes:
    """One DataRecord.inputs entry on the wire (field 4), written by hand: protobuf's writer never repeats a key."""
    v = pb.Value(double_value=value).SerializeToString()
    k = key.encode()
    entry = bytes([0x0A, len(k)]) + k + bytes([0x12, len(v)]) + v
    return bytes([0x22, len(entry)]) + entry


def test_many_names_and_a_repeated_name(tmp_path):
    """The JVM keeps the input names it decoded in a bounded table: past its bound (4,096
    names) records still read as Python reads them; a record that repeats an input name
    (protobuf keeps the last) is left to Python's reader."""
    wide = [make_record(f"w{i}", "wide", {f"n{i}-{j}": float(j) for j in range(1000)}).SerializeToString()
            for i in range(6)]
    narrow = [make_record(f"s{i}", "wide", {"n0-1": 1.5, "x": 2.0}).SerializeToString() for i in range(3)]
    repeated = pb.DataRecord(record_id="r", data_type="wide").SerializeToString() + _map_entry("a", 1.0) + _map_entry("a", 2.0)
    assert python_read(repeated, "wide", HOSTILE_MAX_BYTES).record.inputs["a"].double_value == 2.0
    samples = [wide[0], narrow[0], *wide[1:5], narrow[1], repeated, wide[5], narrow[2]]
    kinds = check_batches(tmp_path, samples, max_bytes=HOSTILE_MAX_BYTES, batch_size=4)
    assert kinds["batched"] == len(samples) - 1 and kinds["left to python"] == 1, kinds


def scored_batches(tmp_path: Path) -> list[pa.RecordBatch]:
    """JVM batches with outputs of every kind, some rows failed, some rows JSON."""
    rnd = random.Random(9)
    out = []
    for _, _, payload in jvm_batches(tmp_path, well_formed(rnd, 200), batch_size=40):
        batch = from_ipc(payload)
        n = batch.num_rows
        reasons = [None if rnd.random() < 0.8 else f"reason {i} ü" for i in range(n)]
        outputs = {
            "p": np.array([rnd.random() for _ in range(n)]),
            "label": np.array([rnd.randrange(-5, 5) for _ in range(n)], np.int64),
            "name": [rnd.choice(["a", "", "grün"]) for _ in range(n)],
            "blob": [rnd.randbytes(rnd.randrange(4)) for _ in range(n)],
            "vec": np.array([[rnd.random(), 1e-40, -0.0] for _ in range(n)], np.float32),
            "mixed": [rnd.choice([1.5, 2, "x", np.ones((2, 1), np.float32)]) for _ in range(n)],
        }
        models = [("m", 3) if i % 3 else ("canary", 4) for i in range(n)]
        stages = ["score" if r else "" for r in reasons]
        out.append(outcomes_to_columns(batch, models, stages, reasons, outputs))
    return out


def parsed(message: bytes, scored: bool):
    if not scored:
        return pb.DeadLetter.FromString(message)
    if message[:1] == b"{":
        return json.loads(message)
    return read_result(message)


def test_the_jvm_writes_from_a_scored_batch_the_messages_python_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(messages, "now_ms", lambda: 1_700_000_000_123)
    batches = scored_batches(tmp_path)
    written = on_jvm(tmp_path, call="write", now_ms=1_700_000_000_123, items=[to_ipc(b) for b in batches])
    kinds = Counter()
    for batch, messages_of_batch in zip(batches, written, strict=True):
        jvm = [(bytes.fromhex(h)[0] == 0, bytes.fromhex(h)[1:]) for h in messages_of_batch]
        python = messages.from_columns(batch)
        assert len(jvm) == len(python) == batch.num_rows
        for (jvm_ok, jvm_message), (py_ok, py_message) in zip(jvm, python, strict=True):
            assert jvm_ok == py_ok
            assert parsed(jvm_message, jvm_ok) == parsed(py_message, py_ok)
            kinds["json" if jvm_message[:1] == b"{" else "protobuf" if jvm_ok else "dead letter"] += 1
    assert min(kinds.values()) > 20 and len(kinds) == 3, kinds
