"""Conversions between protobuf values and Python values."""

import numpy as np
import pytest

from contract import scoring_pb2 as pb
from contract.values import inputs_of, make_record, to_proto, to_python


@pytest.mark.parametrize("value", [1.5, 7, "text", b"\x00\xff"])
def test_scalars_round_trip(value):
    assert to_python(to_proto(value)) == value


def test_tensors_round_trip_with_shape():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    back = to_python(to_proto(array))
    assert back.shape == (2, 3) and np.array_equal(back, array)


def test_numpy_scalars_become_plain_values():
    assert to_proto(np.float32(0.5)).double_value == 0.5
    assert to_proto(np.int64(3)).int64_value == 3


def test_a_tensor_whose_shape_does_not_match_its_values_is_an_error():
    bad = pb.Value(tensor_value=pb.Tensor(shape=[2, 2], values=[1, 2, 3]))
    with pytest.raises(ValueError, match="shape"):
        to_python(bad)


def test_make_record_and_back():
    record = make_record("r1", "wine", {"a": 1.0, "b": 2, "c": "x", "t": [[1.0, 2.0]]}, 99)
    parsed = pb.DataRecord.FromString(record.SerializeToString())
    inputs = inputs_of(parsed)
    assert (parsed.record_id, parsed.data_type, parsed.event_time_ms) == ("r1", "wine", 99)
    assert inputs["a"] == 1.0 and inputs["b"] == 2 and inputs["c"] == "x"
    assert inputs["t"].shape == (1, 2)
