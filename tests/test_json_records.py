"""JSON records and results: every value kind, and a clear reason for each way JSON goes wrong."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from google.protobuf.json_format import MessageToDict

from contract import scoring_pb2 as pb
from contract.json_records import (
    JsonRecordError,
    decode_record,
    read_result,
    record_as_json,
    record_from_json,
)
from contract.values import inputs_of, make_record
from scoring import messages
from scoring.batch import Outcome


def test_every_value_kind_reads_as_its_protobuf_value():
    raw = json.dumps({"record_id": "r-1", "data_type": "wine", "event_time_ms": 1700000000000, "inputs": {
        "ratio": 2.5, "count": 3, "big": -(2**63), "name": "grün", "photo": {"b64": base64.b64encode(b"\x00\xff").decode()},
        "matrix": [[1, 2.5], [3, 4]], "flag": True}}, ensure_ascii=False).encode()
    record, as_json = decode_record(raw)
    assert as_json and (record.record_id, record.data_type, record.event_time_ms) == ("r-1", "wine", 1700000000000)
    # Read back through protobuf's own JSON mapping: the kinds the contract's Value holds.
    kinds = {k: next(iter(v)) for k, v in MessageToDict(record, preserving_proto_field_name=True)["inputs"].items()}
    assert kinds == {"ratio": "double_value", "count": "int64_value", "big": "int64_value", "name": "string_value",
                     "photo": "bytes_value", "matrix": "tensor_value", "flag": "int64_value"}
    values = inputs_of(record)
    assert values["photo"] == b"\x00\xff" and values["flag"] == 1 and values["big"] == -(2**63)
    np.testing.assert_array_equal(values["matrix"], np.array([[1, 2.5], [3, 4]], dtype=np.float32))


def test_a_protobuf_record_never_starts_with_a_brace_and_still_decodes_as_protobuf():
    for record in (make_record("a", "b", {"x": 1.0}), pb.DataRecord(data_type="only"), pb.DataRecord(event_time_ms=5),
                   pb.DataRecord()):
        raw = record.SerializeToString()
        assert raw[:1] != b"{"
        assert decode_record(raw) == (record, False)


def test_a_forced_format_is_not_guessed():
    raw = record_as_json(make_record("a", "b", {"x": 1.0}))
    with pytest.raises(Exception, match="(?i)error parsing|truncated|tag"):
        decode_record(raw, "protobuf")
    with pytest.raises(JsonRecordError, match="not valid JSON"):
        decode_record(b"\n\x01a", "json")


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"record_id": "a", ', "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 20"),
    (b'{"record_id": "a\xff"}', "not UTF-8: byte 16 is 0xff"),
    (b'[1, 2]', "a JSON record is an object, this is a list"),
    (b'{"record_id": 7}', "'record_id' is an integer: it must be a string"),
    (b'{"record_id": "a", "input": {}}', "unknown field(s) ['input']"),
    (b'{"record_id": "a", "inputs": [1]}', "'inputs' is a list: it must be an object of named inputs"),
    (b'{"record_id": "a", "event_time_ms": 1.5}', "'event_time_ms' is 1.5: it must be epoch milliseconds"),
    (b'{"inputs": {"x": NaN}}', "NaN is not a JSON number"),
    (b'{"inputs": {"x": -Infinity}}', "-Infinity is not a JSON number"),
    (b'{"inputs": {"x": 1e400}}', "inputs.x is a number too large for a 64-bit float"),
    (b'{"inputs": {"x": 9223372036854775808}}', "inputs.x is 9223372036854775808: integers must fit in 64 bits"),
    (b'{"inputs": {"x": ' + b"9" * 5000 + b"}}", "JSON holds a number too long to read"),
    (b'{"inputs": {"x": null}}', "inputs.x is null: send a number, string"),
    (b'{"inputs": {"x": {"y": 1}}}', 'the only object input is {"b64": "<base64>"}'),
    (b'{"inputs": {"x": {"b64": "@@"}}}', "inputs.x.b64 is not base64"),
    (b'{"inputs": {"x": [[1, 2], [3]]}}', "inputs.x is ragged: inputs.x[0] has shape [2], inputs.x[1] has [1]"),
    (b'{"inputs": {"x": [1, [2]]}}', "inputs.x mixes lists and numbers"),
    (b'{"inputs": {"x": [1, "2"]}}', "inputs.x holds a string: a list input is a tensor of numbers"),
    (b'{"inputs": {"x": [1e39]}}', "inputs.x holds a number too large for a float32 tensor"),
    (b'{"inputs": {"x": ' + b"[" * 9 + b"1" + b"]" * 9 + b"}}", "is nested deeper than 8 levels"),
    (b'{"inputs": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}", "JSON nested too deep to read"),
])
def test_bad_json_says_what_is_wrong_and_where(raw, reason):
    with pytest.raises(JsonRecordError) as err:
        record_from_json(raw)
    assert reason in str(err.value)


@pytest.mark.parametrize("raw", [
    b'{"record_id": "r-7", "data_type": "wine", "colour": "red"}',
    b'{"record_id": "r-7", "data_type": "wine", "inputs": {"x": [[1, 2], [3]]}}',
    b'{"data_type": "wine", "inputs": {"x": NaN}, "record_id": "r-7"}',
])
def test_a_json_record_refused_after_it_parsed_is_dead_lettered_under_its_id(raw):
    from scoring.records import UnreadableRecord, read_record

    with pytest.raises(UnreadableRecord) as refused:
        read_record(raw, "wine", 1 << 20)
    if b"NaN" in raw:  # refused while parsing: no id is known yet
        assert refused.value.record is None
    else:
        letter = pb.DeadLetter.FromString(messages.dead_letter(raw, "parse", str(refused.value), refused.value.record))
        assert (letter.record_id, letter.data_type, letter.original) == ("r-7", "wine", raw)


def test_a_json_record_s_result_is_json_naming_the_model_version():
    record = make_record("r-9", "wine", {"x": 1.0}, 1234)

    class Servable:
        name, version = "wine-model", 3

    outputs = {"label": np.int64(2), "p": np.float32(0.25), "vector": np.array([0.5, 1.5], dtype=np.float32),
               "text": "ja", "raw": b"\x01"}
    value, failure = messages.result_or_failure(record, Outcome(outputs=outputs), Servable, as_json=True)
    assert failure is None
    doc = json.loads(value)
    assert {k: doc[k] for k in ("record_id", "data_type", "model_name", "model_version", "event_time_ms")} == {
        "record_id": "r-9", "data_type": "wine", "model_name": "wine-model", "model_version": 3, "event_time_ms": 1234}
    assert doc["outputs"] == {"label": 2, "p": 0.25, "vector": [0.5, 1.5], "text": "ja", "raw": {"b64": "AQ=="}}
    assert doc["scoring_time_ms"] > 0
    assert read_result(value).model_version == 3
    protobuf, _ = messages.result_or_failure(record, Outcome(outputs=outputs), Servable)
    assert read_result(protobuf).outputs == read_result(value).outputs
