"""The ONNX backend against ONNX Runtime's own results and scikit-learn's, on models made by
skl2onnx and by the onnx package's graph helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from contract import scoring_pb2 as pb
from samples.build import add_onnx_properties, wine_data
from scoring.backends import onnx as onnx_backend
from scoring.backends.registry import backend_for
from scoring.batch import score_batch, warm_up
from scoring.errors import InputTypeError, MissingInputError, ModelLoadError, VerificationError
from scoring.verification import to_json
from tests.conftest import load_samples
from tests.test_backends import load_inline


def load(path: Path):
    return backend_for(pb.ONNX).load(path)


def test_every_wine_record_scores_as_onnx_runtime_itself_scores_it(samples):
    """The whole wine data set (178 records, not only the samples) against a plain
    InferenceSession with default options (more threads: sums may differ in the last bit)."""
    X, _ = wine_data()
    path = samples["wine-onnx"] / "model.onnx"
    outcomes = score_batch(load(path), X.to_dict(orient="records"))
    assert all(o.ok for o in outcomes), [str(o.error) for o in outcomes if not o.ok][:3]

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {n: X[[n]].to_numpy(np.float32) for n in X.columns})
    assert [o.outputs["output_label"] for o in outcomes] == labels.tolist()
    for outcome, row in zip(outcomes, probabilities, strict=True):
        assert {k: outcome.outputs[f"output_probability_{k}"] for k in row} == pytest.approx(row, rel=1e-6, abs=1e-7)


def test_a_single_tensor_input_without_zipmap(tmp_path):
    """skl2onnx's other common shape: one [N, 13] input, probabilities as a [N, 3] tensor."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    X, y = wine_data()
    features = X.to_numpy(np.float32)
    clf = LogisticRegression(max_iter=5000).fit(features, y)
    path = tmp_path / "model.onnx"
    path.write_bytes(to_onnx(clf, features[:1], options={"zipmap": False}, target_opset=17).SerializeToString())
    model = load(path)
    assert model.input_fields["X"].shape == (13,)
    outcomes = score_batch(model, [{"X": row} for row in features])
    np.testing.assert_allclose(np.stack([o.outputs["probabilities"] for o in outcomes]),
                               clf.predict_proba(features), rtol=1e-4, atol=1e-5)
    assert [o.outputs["label"] for o in outcomes] == clf.predict(features).tolist()
    wrong = score_batch(model, [{"X": features[0][:5]}])[0].error
    assert isinstance(wrong, InputTypeError) and "shape [5], the model takes shape [13]" in str(wrong)


def graph_model(path: Path, inputs: list, outputs: list, nodes: list) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def test_integer_and_string_inputs_per_record(tmp_path):
    """[N] inputs of int64 and string: one value per record, outputs as the graph gives them."""
    path = graph_model(
        tmp_path / "m.onnx",
        [helper.make_tensor_value_info("count", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("name", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("doubled", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("same_name", TensorProto.STRING, ["N"])],
        [helper.make_node("Add", ["count", "count"], ["doubled"]),
         helper.make_node("Identity", ["name"], ["same_name"])])
    model = load(path)
    outcomes = score_batch(model, [{"count": 3, "name": "grün"}, {"count": -7, "name": b"ok"}])
    assert [o.outputs for o in outcomes] == [{"doubled": 6, "same_name": "grün"},
                                             {"doubled": -14, "same_name": "ok"}]
    errors = [o.error for o in score_batch(model, [{"count": 1.5, "name": "x"}, {"name": "x"}])]
    assert isinstance(errors[0], InputTypeError) and "input 'count' is a float, the model takes a int" in str(errors[0])
    assert isinstance(errors[1], MissingInputError) and "missing input(s) ['count']" in str(errors[1])


def test_an_input_type_it_cannot_feed_is_refused_at_load_naming_it(tmp_path):
    path = graph_model(tmp_path / "m.onnx", [helper.make_tensor_value_info("flag", TensorProto.BOOL, ["N"])],
                       [helper.make_tensor_value_info("out", TensorProto.BOOL, ["N"])],
                       [helper.make_node("Not", ["flag"], ["out"])])
    with pytest.raises(ModelLoadError, match=r"input 'flag' has type tensor\(bool\), which this backend does not feed"):
        load(path)


def test_corrupt_bytes_are_refused_with_the_runtime_s_reason(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07this is not an ONNX graph" * 10)
    with pytest.raises(ModelLoadError, match="ONNX model model.onnx cannot be loaded by ONNX Runtime"):
        load(path)


def test_a_model_with_external_data_is_refused_before_the_runtime_reads_any_file(samples, tmp_path):
    """ONNX Runtime would read an external tensor from wherever its location points, outside
    the one file the descriptor's SHA-256 covers."""
    weights = onnx.numpy_helper.from_array(np.array([[0.5], [-1.0], [2.0]], dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "external",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    with pytest.raises(ModelLoadError, match="keeps .* tensor.* as external data .*'weights.bin'.*self-contained"):
        backend_for(pb.ONNX).unsafe_ops(tmp_path / "model.onnx", frozenset({"ExternalData"}))
    assert backend_for(pb.ONNX).unsafe_ops(samples["wine-onnx"] / "model.onnx", frozenset()) == []


def test_a_session_runs_on_one_thread_unless_told(monkeypatch):
    assert onnx_backend.session_options().intra_op_num_threads == 1
    monkeypatch.setenv("SCORING_ONNX_THREADS", "2")
    assert onnx_backend.session_options().intra_op_num_threads == 2


def test_warm_up_inputs_and_verification_ride_in_the_metadata(samples, tmp_path):
    doc = load_samples(samples["wine-onnx"])
    path = tmp_path / "model.onnx"
    path.write_bytes((samples["wine-onnx"] / "model.onnx").read_bytes())
    add_onnx_properties(path, {onnx_backend.WARMUP_KEY: json.dumps(doc["inputs"][:3])})
    model = load(path)
    assert warm_up(model) == 3
    assert len(model.verification().inputs) == len(doc["inputs"])


def test_a_model_that_disagrees_with_its_verification_is_refused(samples, tmp_path):
    doc = load_samples(samples["wine-onnx"])
    wrong = [dict(e) for e in doc["expected"]]
    wrong[4]["output_probability_1"] += 0.25
    path = tmp_path / "model.onnx"
    path.write_bytes((samples["wine-onnx"] / "model.onnx").read_bytes())
    add_onnx_properties(path, {onnx_backend.VERIFICATION_KEY: to_json(doc["inputs"], wrong)})
    with pytest.raises(VerificationError, match="sample 5 of 16: output 'output_probability_1'"):
        load_inline(path, pb.ONNX, tmp_path)
