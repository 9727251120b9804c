"""The TensorFlow, PMML, ONNX, XGBoost and LightGBM backends against the training frameworks' own
predictions."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from contract import scoring_pb2 as pb
from model_store.fetcher import ArtifactFetcher, FetchPolicy
from model_store.repository import pack_saved_model
from scoring.backends.registry import backend_for
from scoring.batch import score_batch, warm_up
from scoring.errors import (
    InputTypeError,
    MissingInputError,
    ModelLoadError,
    PredictionError,
    UnknownModelTypeError,
    VerificationError,
    WarmUpError,
)
from scoring.loader import Servable, load_servable
from tests.conftest import load_samples

ROOT = Path(__file__).resolve().parent.parent


def artifact_of(folder: Path, tmp_path: Path) -> tuple[Path, int]:
    if (folder / "model.pmml").exists():
        return folder / "model.pmml", pb.PMML
    if (folder / "model.onnx").exists():
        return folder / "model.onnx", pb.ONNX
    if (folder / "model.json").exists():
        return folder / "model.json", pb.XGBOOST
    if (folder / "model.txt").exists():
        return folder / "model.txt", pb.LIGHTGBM
    target = tmp_path / "model.tar.gz"
    pack_saved_model(folder / "saved_model", target)
    return target, pb.TENSORFLOW_SAVED_MODEL


def load(folder: Path, tmp_path: Path):
    artifact, model_type = artifact_of(folder, tmp_path)
    return backend_for(model_type).load(artifact)


def assert_close(actual: dict, expected: dict) -> None:
    assert set(expected) <= set(actual), f"outputs {sorted(actual)} lack {sorted(expected)}"
    for name, want in expected.items():
        got = actual[name]
        if isinstance(want, str):
            assert got == want, name
        else:
            np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=1e-4, atol=1e-5,
                                       err_msg=name)


SAMPLES = ["wine-pmml", "wine-tf", "wine-onnx", "wine-xgboost", "wine-lightgbm", "spam-tf", "digits-tf"]


@pytest.mark.parametrize("sample", SAMPLES)
def test_scores_equal_the_training_frameworks_predictions(samples, tmp_path, sample):
    doc = load_samples(samples[sample])
    model = load(samples[sample], tmp_path)
    assert warm_up(model) >= 1
    outcomes = score_batch(model, doc["inputs"])
    assert all(o.ok for o in outcomes), [str(o.error) for o in outcomes if not o.ok]
    for outcome, expected in zip(outcomes, doc["expected"], strict=True):
        assert_close(outcome.outputs, expected)
    # One record at a time gives the same results as the batch.
    assert_close(score_batch(model, doc["inputs"][:1])[0].outputs, doc["expected"][0])


@pytest.mark.parametrize("sample", ["wine-pmml", "wine-tf", "wine-xgboost", "wine-lightgbm"])
def test_bad_records_fail_alone(samples, tmp_path, sample):
    doc = load_samples(samples[sample])
    model = load(samples[sample], tmp_path)
    good = doc["inputs"][:3]
    missing = {k: v for k, v in good[0].items() if k != "alcohol"}
    wrong_type = {**good[0], "alcohol": "strong"}
    not_finite = {**good[0], "hue": float("nan")}
    tensor = {**good[0], "ash": np.ones((2, 2), dtype=np.float32)}
    outcomes = score_batch(model, [good[0], missing, wrong_type, good[1], not_finite, tensor, good[2]])
    assert [o.ok for o in outcomes] == [True, False, False, True, False, False, True]
    assert isinstance(outcomes[1].error, MissingInputError) and "alcohol" in str(outcomes[1].error)
    assert isinstance(outcomes[2].error, InputTypeError) and "'alcohol'" in str(outcomes[2].error)
    assert "nan" in str(outcomes[4].error)
    for outcome, expected in zip([outcomes[0], outcomes[3], outcomes[6]], doc["expected"][:3], strict=True):
        assert_close(outcome.outputs, expected)


def test_a_record_that_makes_the_model_throw_is_isolated(samples, tmp_path):
    doc = load_samples(samples["digits-tf"])
    model = load(samples["digits-tf"], tmp_path)
    not_a_jpeg = {"image_b64": base64.urlsafe_b64encode(b"definitely not a jpeg").decode()}
    batch = doc["inputs"][:4] + [not_a_jpeg] + doc["inputs"][4:8]
    outcomes = score_batch(model, batch)
    assert [o.ok for o in outcomes] == [True] * 4 + [False] + [True] * 4
    assert isinstance(outcomes[4].error, PredictionError)
    good = [o for o in outcomes if o.ok]
    for outcome, expected in zip(good, doc["expected"][:8], strict=True):
        assert_close(outcome.outputs, expected)


def test_tensor_inputs_checked_for_shape(tmp_path):
    import tensorflow as tf

    module = tf.Module()

    @tf.function(input_signature=[{"x": tf.TensorSpec([None, 2, 3], tf.float32, name="x")}])
    def serve(inputs):
        return {"total": tf.reduce_sum(inputs["x"], axis=[1, 2])}

    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": serve})
    pack_saved_model(tmp_path / "sm", tmp_path / "m.tar.gz")
    model = backend_for(pb.TENSORFLOW_SAVED_MODEL).load(tmp_path / "m.tar.gz")
    assert warm_up(model) == 2  # generated from the signature
    ok = np.arange(6, dtype=np.float32).reshape(2, 3)
    outcomes = score_batch(model, [{"x": ok}, {"x": ok.reshape(3, 2)}, {"x": 1.0}])
    assert outcomes[0].outputs["total"] == pytest.approx(15.0)
    assert "shape [3, 2]" in str(outcomes[1].error) and "[2, 3]" in str(outcomes[1].error)
    assert isinstance(outcomes[2].error, InputTypeError)


def test_a_model_returning_nan_fails_its_warm_up(tmp_path):
    import tensorflow as tf

    module = tf.Module()

    @tf.function(input_signature=[{"x": tf.TensorSpec([None], tf.float32, name="x")}])
    def serve(inputs):
        return {"y": inputs["x"] / 0.0 * 0.0}

    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": serve})
    pack_saved_model(tmp_path / "sm", tmp_path / "m.tar.gz")
    model = backend_for(pb.TENSORFLOW_SAVED_MODEL).load(tmp_path / "m.tar.gz")
    with pytest.raises(WarmUpError, match=r"^input 1 of \d+: .*non-finite output"):
        warm_up(model)


def test_corrupt_pmml_is_refused(tmp_path):
    bad = tmp_path / "bad.pmml"
    bad.write_bytes(np.random.default_rng(1).bytes(2000))
    with pytest.raises(ModelLoadError, match="not well-formed XML"):
        backend_for(pb.PMML).load(bad)
    not_pmml = tmp_path / "x.pmml"
    not_pmml.write_text("<html><body/></html>")
    with pytest.raises(ModelLoadError, match="not <PMML>"):
        backend_for(pb.PMML).load(not_pmml)


def test_pmml_with_an_external_entity_is_refused_without_reading_the_file(samples, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    original = (samples["wine-pmml"] / "model.pmml").read_text()
    body = original[original.index("<PMML"):]
    body = body.replace("</Header>", "<Annotation>&xxe;</Annotation></Header>", 1)
    evil = tmp_path / "evil.pmml"
    evil.write_text(f'<?xml version="1.0"?>\n<!DOCTYPE PMML [<!ENTITY xxe SYSTEM "file://{secret}">]>\n{body}')
    with pytest.raises(ModelLoadError, match="DOCTYPE") as err:
        backend_for(pb.PMML).load(evil)
    assert "TOP-SECRET-VALUE" not in str(err.value)


def test_corrupt_saved_models_are_refused(samples, tmp_path):
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"\x1f\x8b" + np.random.default_rng(2).bytes(500))
    with pytest.raises(ModelLoadError, match="not a readable .tar.gz"):
        backend_for(pb.TENSORFLOW_SAVED_MODEL).load(garbage)

    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz") as tar:
        info = tarfile.TarInfo("readme.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ModelLoadError, match="no saved_model.pb"):
        backend_for(pb.TENSORFLOW_SAVED_MODEL).load(empty)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a protobuf at all" * 10)
    pack_saved_model(broken, tmp_path / "broken.tar.gz")
    with pytest.raises(ModelLoadError, match="cannot be loaded by TensorFlow"):
        backend_for(pb.TENSORFLOW_SAVED_MODEL).load(tmp_path / "broken.tar.gz")
    # Through the loader, the graph check reads saved_model.pb first: the same clear refusal.
    with pytest.raises(ModelLoadError, match="cannot be loaded by TensorFlow: its saved_model.pb does not parse"):
        load_inline(tmp_path / "broken.tar.gz", pb.TENSORFLOW_SAVED_MODEL, tmp_path)


def test_tar_path_traversal_is_refused(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(ModelLoadError):
        backend_for(pb.TENSORFLOW_SAVED_MODEL).load(evil)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_unknown_signature_and_unknown_type(samples, tmp_path):
    artifact, _ = artifact_of(samples["wine-tf"], tmp_path)
    with pytest.raises(ModelLoadError, match="no signature 'predict'.*serving_default"):
        backend_for(pb.TENSORFLOW_SAVED_MODEL).load(artifact, "predict")
    with pytest.raises(UnknownModelTypeError, match="no backend for model type 42"):
        backend_for(42)


LINEAR_BACKEND = """
import json
from scoring.backends.base import InputField, LoadedModel, ModelBackend

class Linear(LoadedModel):
    def __init__(self, weights):
        self.weights = weights
        self.input_fields = {n: InputField(n, "float") for n in weights}
    def predict(self, batch):
        return [{"y": sum(w * r[n] for n, w in self.weights.items())} for r in batch]
    def warm_up_inputs(self):
        return [{n: 0.0 for n in self.weights}]
    def release(self):
        pass

class LinearBackend(ModelBackend):
    def load(self, artifact, signature_name=""):
        return Linear(json.loads(artifact.read_text()))
"""

NEW_BACKEND_USE = """
import json, sys
from pathlib import Path
from scoring.backends import registry
from scoring.batch import score_batch
model = registry.backend_for(99).load(Path(sys.argv[1]))
print(json.dumps([r.outputs for r in score_batch(model, [{"a": 2.0, "b": 3.0}, {"a": 1, "b": -1.0}])]))
"""


def test_a_new_backend_is_one_module_and_one_registry_line(tmp_path):
    """A backend module of a user's own, named in SCORING_EXTRA_BACKENDS, loads and scores
    in a fresh interpreter, and nothing of the project's changes."""
    (tmp_path / "linear_backend.py").write_text(LINEAR_BACKEND)
    (tmp_path / "weights.json").write_text('{"a": 0.5, "b": 2.0}')
    env = {**os.environ, "SCORING_EXTRA_BACKENDS": "99=linear_backend:LinearBackend",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    done = subprocess.run([sys.executable, "-c", NEW_BACKEND_USE, str(tmp_path / "weights.json")], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [{"y": 7.0}, {"y": -1.5}]
    without = subprocess.run([sys.executable, "-c", NEW_BACKEND_USE, str(tmp_path / "weights.json")],
                             env={**env, "SCORING_EXTRA_BACKENDS": ""}, cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
    assert without.returncode != 0 and "no backend for model type 99" in without.stderr


MIXED_PMML = """<?xml version="1.0"?>
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4"><Header/>
 <DataDictionary>
  <DataField name="colour" optype="categorical" dataType="string">
   <Value value="red"/><Value value="grün"/></DataField>
  <DataField name="size" optype="continuous" dataType="double"/>
  <DataField name="count" optype="continuous" dataType="integer"/>
  <DataField name="label" optype="categorical" dataType="string">
   <Value value="yes"/><Value value="no"/></DataField>
 </DataDictionary>
 <RegressionModel functionName="classification" normalizationMethod="softmax">
  <MiningSchema><MiningField name="colour"/><MiningField name="size"/><MiningField name="count"/>
   <MiningField name="label" usageType="target"/></MiningSchema>
  <Output>
   <OutputField name="predicted_label" optype="categorical" dataType="string" feature="predictedValue"/>
   <OutputField name="p_yes" optype="continuous" dataType="double" feature="probability" value="yes"/>
  </Output>
  <RegressionTable intercept="0.5" targetCategory="yes">
   <NumericPredictor name="size" coefficient="0.3"/><NumericPredictor name="count" coefficient="-0.2"/>
   <CategoricalPredictor name="colour" value="red" coefficient="1.5"/>
   <CategoricalPredictor name="colour" value="grün" coefficient="-2.5"/>
  </RegressionTable>
  <RegressionTable intercept="0" targetCategory="no"/>
 </RegressionModel>
</PMML>"""


def test_pmml_batches_agree_with_pypmml_record_by_record(tmp_path):
    """The one-call JSON batch path against pypmml's own per-record API: string, int and
    double inputs (non-ASCII included), string and double outputs."""
    artifact = tmp_path / "mixed.pmml"
    artifact.write_text(MIXED_PMML, encoding="utf-8")
    model = backend_for(pb.PMML).load(artifact)
    rows = [{"colour": c, "size": s, "count": n}
            for c in ("red", "grün") for s in (-3.25, 0.0, 7.5) for n in (0, 4)]
    outcomes = score_batch(model, rows)
    assert all(o.ok for o in outcomes), [str(o.error) for o in outcomes if not o.ok]
    labels = set()
    for row, outcome in zip(rows, outcomes, strict=True):
        want = model._model.predict(row)  # pypmml's record API, a different route into pmml4s
        assert outcome.outputs["predicted_label"] == want["predicted_label"]
        assert outcome.outputs["p_yes"] == pytest.approx(want["p_yes"], rel=1e-12)
        labels.add(want["predicted_label"])
    assert labels == {"yes", "no"}  # the rows exercise both classes


# ---- verification on load ------------------------------------------------------------------------
def load_inline(artifact: Path, model_type: int, tmp_path: Path) -> Servable:
    """Through the loader, as the job loads a model: fetch (inline), load, warm up, verify."""
    data = artifact.read_bytes()
    d = pb.ModelDescriptor(name="m", data_type="d", version=1, model_type=model_type, inline_bytes=data)
    return load_servable(d, ArtifactFetcher(tmp_path / "cache", FetchPolicy.parse([])))


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_sample_model_passes_its_own_verification_on_load(samples, tmp_path, sample):
    artifact, model_type = artifact_of(samples[sample], tmp_path)
    assert load_inline(artifact, model_type, tmp_path).verified == len(load_samples(samples[sample])["inputs"])


def test_a_pmml_model_that_disagrees_with_its_verification_is_refused_naming_sample_and_output(samples, tmp_path):
    expected = load_samples(samples["wine-pmml"])["expected"][2]["probability_1"]
    text = (samples["wine-pmml"] / "model.pmml").read_text()
    cell = f"<probability_1>{expected!r}</probability_1>"
    assert text.count(cell) == 1
    changed = tmp_path / "changed.pmml"
    changed.write_text(text.replace(cell, f"<probability_1>{expected + 0.01!r}</probability_1>"))
    with pytest.raises(VerificationError, match=r"sample 3 of 16: output 'probability_1' is [0-9.e-]+, "
                                                r"expected [0-9.e-]+ \(rtol 0.0001, atol 1e-05\)"):
        load_inline(changed, pb.PMML, tmp_path)


def test_a_saved_model_that_disagrees_with_its_verification_is_refused(samples, tmp_path):
    import json
    import shutil

    copy = tmp_path / "wine-tf"
    shutil.copytree(samples["wine-tf"], copy)
    shipped = copy / "saved_model" / "assets.extra" / "verification.json"
    doc = json.loads(shipped.read_text())
    doc["expected"][1]["probabilities"][2] += 0.2
    shipped.write_text(json.dumps(doc))
    artifact, _ = artifact_of(copy, tmp_path)
    with pytest.raises(VerificationError, match=r"sample 2 of 16: output 'probabilities' \[2\] is"):
        load_inline(artifact, pb.TENSORFLOW_SAVED_MODEL, tmp_path)


@pytest.mark.parametrize(("actual", "expected", "found"), [
    ("spam", "spam", ""),
    ("ham", "spam", "is 'ham', expected 'spam'"),
    (2, 2.0, ""),
    (0.50004, 0.5, ""),
    (0.52, 0.5, "is 0.52, expected 0.5"),
    (np.array([0.1, 0.2]), [0.1, 0.25], "[1] is 0.2, expected 0.25"),
    (np.array([0.1]), [0.1, 0.2], "has shape [1], expected [2]"),
])
def test_outputs_are_compared_exactly_for_text_and_within_tolerance_for_numbers(actual, expected, found):
    from scoring.verification import Tolerance, difference

    problem = difference(actual, expected, Tolerance(rtol=1e-4, atol=1e-5))
    assert (found in problem) if found else problem == ""
