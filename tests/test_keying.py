"""The job's JVM keying (jvm/operators, DataTypeKey) against Python's full parse: whenever Python
reads a record's data type, the JVM keyed the record by the same one. Records the JVM cannot
key get "" and are dead-lettered by the Python side, with the reason (test_scoring_job)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from contract import scoring_pb2 as pb
from contract.json_records import decode_record
from contract.values import inputs_of, make_record
from jobs.jars import operators_jar
from scoring.records import UnreadableRecord, read_record

MAX_BYTES = 4096
HOSTILE_MAX_BYTES = 4 * 1024 * 1024  # the job's default --max-record-bytes

# Runs in a child process: PyFlink's gateway JVM would otherwise outlive the test.
JVM_KEYS = """
import json, sys
from pyflink.java_gateway import get_gateway
from pyflink.datastream import StreamExecutionEnvironment
StreamExecutionEnvironment.get_execution_environment().add_jars(sys.argv[1])
keying = get_gateway().jvm.io.github.flinkscoring.DataTypeKey(sys.argv[2], int(sys.argv[3]))
samples = [bytes.fromhex(h) for h in json.load(sys.stdin)]
json.dump([keying.dataType(s) for s in samples], sys.stdout)
"""


def jvm_keys(samples: list[bytes], record_format: str = "auto", max_bytes: int = MAX_BYTES) -> list[str]:
    done = subprocess.run([sys.executable, "-c", JVM_KEYS, operators_jar().as_uri(), record_format, str(max_bytes)],
                          input=json.dumps([s.hex() for s in samples]), capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def python_data_type(raw: bytes, record_format: str = "auto", max_bytes: int = MAX_BYTES) -> str | None:
    try:
        return decode_record(raw, record_format)[0].data_type if len(raw) <= max_bytes else None
    except Exception:
        return None


def fuzzed(rnd: random.Random, n: int) -> list[bytes]:
    """Records, then the same with bytes flipped, cut short, as JSON, or random bytes."""
    out = []
    for i in range(n):
        record = make_record(f"r-{i}", rnd.choice(["wine", "grün", "x" * 300, "", "a b"]),
                             {f"f{j}": rnd.random() for j in range(rnd.randrange(5))})
        raw = bytearray(record.SerializeToString())
        kind = rnd.randrange(5)
        if kind == 1:
            for _ in range(rnd.randrange(1, 4)):
                raw[rnd.randrange(len(raw))] = rnd.randrange(256)
        elif kind == 2:
            raw = raw[:rnd.randrange(len(raw))]
        elif kind == 3:
            raw = bytearray(rnd.randbytes(rnd.randrange(1, 40)))
        elif kind == 4:
            raw = bytearray(json.dumps({"record_id": record.record_id, "data_type": record.data_type,
                                        "inputs": {"a": 1.5}}, ensure_ascii=rnd.random() < 0.5).encode())
            if rnd.random() < 0.5:
                raw[rnd.randrange(1, len(raw))] = rnd.randrange(32, 127)
        out.append(bytes(raw))
    return out


def edge_cases() -> list[bytes]:
    wine = make_record("r", "wine", {"x": 1.0}).SerializeToString()
    unknown_group = b"\x2b\x08\x01\x2c"  # field 5, a group holding field 1 = 1
    return [
        wine + pb.DataRecord(data_type="beer").SerializeToString(),  # protobuf merges: the last wins
        unknown_group + wine,
        b"\x10\x05" + wine[2:],  # field 2 as a varint: not a data type
        b"\x12\x05wi",  # length past the end
        pb.DataRecord(record_id="r").SerializeToString(),  # no data type
        b"",
        b"x" * (MAX_BYTES + 1),
        b'{"record_id": "r", "data_type": "wine", "data_type": "beer"}',  # JSON: the last wins too
        b'{"record_id": "r", "inputs": {"data_type": "nested"}, "data_type": "wine"}',
        b'{"record_id": "r", "data_\\u0074ype": "wine"}',
        b'{"record_id": "r", "data_type": 7}',
        b'{"record_id": "r", "data_type": "wine"} trailing',
        b'{"record_id": "r", "data_type": "w\\u00efne\\ud83c\\udf77"}',
        b'{"record_id": "r", "data_type": "wine", "x": NaN}',
        b"[1, 2]",
    ]


def test_the_jvm_keys_every_record_by_the_data_type_python_reads():
    samples = edge_cases() + fuzzed(random.Random(7), 2000)
    keys = jvm_keys(samples)
    read = [python_data_type(s) for s in samples]
    wrong = [(s[:60], k, r) for s, k, r in zip(samples, keys, read, strict=True) if r and k != r]
    assert not wrong
    # Not vacuous: most records have a data type, and some do not parse at all.
    assert sum(bool(r) for r in read) > 500 and sum(r is None for r in read) > 300
    assert keys[:2] == ["beer", "wine"] and keys[7:10] == ["beer", "wine", "wine"]


def test_a_forced_format_keys_as_it_parses():
    raw = json.dumps({"record_id": "r", "data_type": "wine"}).encode()
    assert jvm_keys([raw], "protobuf") == [python_data_type(raw, "protobuf") or ""]
    assert jvm_keys([raw, make_record("r", "wine", {}).SerializeToString()], "json") == ["wine", ""]


def test_python_dead_letters_what_the_jvm_could_not_key_and_says_why():
    def reason(raw: bytes, key: str) -> str:
        try:
            read_record(raw, key, MAX_BYTES)
        except UnreadableRecord as err:
            return str(err)
        return ""

    wine = make_record("r", "wine", {"x": 1.0}).SerializeToString()
    assert reason(wine, "wine") == ""
    assert "not a DataRecord protobuf" in reason(b"\x12\x05wi", "")
    assert reason(pb.DataRecord(record_id="r").SerializeToString(), "") == "record has no data_type"
    assert "over the 4096-byte limit" in reason(b"x" * (MAX_BYTES + 1), "")
    assert "bad JSON record: 'data_type' is an integer" in reason(b'{"record_id": "r", "data_type": 7}', "")
    assert "is not the one the job keyed it by ('beer'" in reason(wine, "beer")


def hostile(rnd: random.Random, n: int) -> list[bytes]:
    """Records built to break a reader (faults/bad_records: nesting at and past the limits,
    wire types and varints the format forbids, tensor shapes that overflow, numbers at every
    limit), each kind at its boundary values too."""
    from faults import bad_records as bad

    row = {"a": 1.0, "b": 2.0}
    out = []
    for i in range(n):
        good = bad.record(f"h-{i}", "wine", row).SerializeToString()
        if i % 3 == 0:
            maker = rnd.choice([bad.tensor_shapes, bad.number_limits])
            out.append(maker(rnd, row, f"h-{i}", "wine").SerializeToString())
        else:
            out.append(rnd.choice(bad.BY_STRUCTURE)(rnd, good))
    depths = [bad.PROTOBUF_DEPTH, bad.PROTOBUF_DEPTH + 1]
    good = bad.record("edge", "wine", row).SerializeToString()
    return out + [b"\x2b" * d + b"\x2c" * d + good for d in depths]


def test_no_record_makes_a_reader_throw_and_both_agree_on_the_data_type():
    """A record that made the JVM keying throw would fail its task, and again after every
    restart (the same record is read again). Python's reader may only say why it refuses."""
    samples = hostile(random.Random(11), 600)
    keys = jvm_keys(samples, max_bytes=HOSTILE_MAX_BYTES)  # a throw fails the child process
    assert len(keys) == len(samples)
    read = [python_data_type(s, max_bytes=HOSTILE_MAX_BYTES) for s in samples]
    wrong = [(s[:40], k, r) for s, k, r in zip(samples, keys, read, strict=True) if r and k != r]
    assert not wrong
    assert keys[-2:] == ["wine", ""] and read[-2:] == ["wine", None]  # the limit, the same on both sides
    unexpected = []
    for s, k in zip(samples, keys, strict=True):
        try:
            record, _ = read_record(s, k, HOSTILE_MAX_BYTES)
            inputs_of(record)
        except (UnreadableRecord, ValueError):
            continue
        except Exception as err:  # noqa: BLE001 - any other type is the finding
            unexpected.append((s[:40], repr(err)))
    assert not unexpected
    assert sum(bool(r) for r in read) > 50 and sum(r is None for r in read) > 200  # both kinds present
