"""The XGBoost and LightGBM backends against the libraries' own predictions, on models the
libraries trained (the wine samples, and small binary, regression and unnamed-feature models
made here), and what they refuse: pickles, joblib files, XGBoost's legacy binary format,
corrupt bytes and a model that disagrees with its own verification samples."""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import joblib
import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import load_breast_cancer, load_diabetes

from contract import scoring_pb2 as pb
from contract.columns import Arrived, to_columns
from contract.model_types import artifact_file, xgboost_encoding
from contract.values import make_record
from infra import paths
from model_store.repository import ModelRepository
from samples.build import add_lightgbm_properties, add_xgboost_attributes, build_all, wine_data
from scoring.backends import gbdt
from scoring.backends.lightgbm import header, with_properties
from scoring.backends.registry import backend_for
from scoring.batch import score_batch, warm_up
from scoring.columns import score_columns
from scoring.errors import InputTypeError, ModelLoadError, VerificationError
from scoring.explain import explain_into
from scoring.verification import VERIFICATION_KEY, to_json
from tests.conftest import load_samples
from tests.test_backends import load_inline

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ["xgboost", "lightgbm"]
TYPES = {"xgboost": pb.XGBOOST, "lightgbm": pb.LIGHTGBM}
FILES = {"xgboost": "model.json", "lightgbm": "model.txt"}
OBJECTIVES = {  # what the test trains, per task and library
    # LightGBM's sigmoid is not its default 1: the backend reads the link from the model.
    "binary": {"xgboost": {"objective": "binary:logistic"}, "lightgbm": {"objective": "binary", "sigmoid": 2.0}},
    "regression": {"xgboost": {"objective": "reg:squarederror"}, "lightgbm": {"objective": "regression"}},
    "multiclass": {"xgboost": {"objective": "multi:softprob", "num_class": 3},
                   "lightgbm": {"objective": "multiclass", "num_class": 3}},
}


@pytest.fixture(scope="module")
def wine() -> dict[str, Path]:
    """The two wine samples only (the `samples` fixture builds every sample, TensorFlow's too)."""
    built = build_all(paths.RUN / "samples", ["wine-xgboost", "wine-lightgbm"])
    return {"xgboost": built["wine-xgboost"], "lightgbm": built["wine-lightgbm"]}


def train(library: str, params: dict, X, y, rounds: int = 15):
    if library == "xgboost":
        return xgb.train({**params, "max_depth": 3, "nthread": 1, "seed": 3}, xgb.DMatrix(X, label=y), rounds)
    return lgb.train({**params, "num_leaves": 7, "min_data_in_leaf": 5, "num_threads": 1, "seed": 3,
                      "deterministic": True, "verbose": -1}, lgb.Dataset(X, label=y), rounds)


def save(library: str, booster, path: Path) -> Path:
    booster.save_model(str(path))
    return path


def raw(library: str, path: Path, X, margin: bool = False) -> np.ndarray:
    """The library's own prediction, from its own loader reading the same file."""
    if library == "xgboost":
        return xgb.Booster(model_file=str(path)).predict(xgb.DMatrix(X), output_margin=margin)
    return lgb.Booster(model_file=str(path)).predict(X, raw_score=margin)


def load(library: str, path: Path):
    return backend_for(TYPES[library]).load(path)


def records_of(X) -> list[dict]:
    return X.to_dict(orient="records")


def columns_scored(model, rows: list[dict]) -> dict[str, np.ndarray]:
    """The columnar path as the job runs it: records into Arrow columns, checked, one call."""
    records = [make_record(f"r{i}", "dt", row) for i, row in enumerate(rows)]
    scored = score_columns(model, to_columns("dt", [Arrived(r, False, r.SerializeToString()) for r in records]))
    assert scored.reasons == [None] * len(rows)
    return {name: np.asarray(column) for name, column in scored.outputs.items()}


def by_record(outcomes, name: str) -> np.ndarray:
    assert all(o.ok for o in outcomes), [str(o.error) for o in outcomes if not o.ok][:3]
    return np.array([o.outputs[name] for o in outcomes])


def held_out(X, y):
    """Even rows to train on, odd rows to score."""
    return X.iloc[::2], y[::2], X.iloc[1::2]


# ---- scores ----------------------------------------------------------------------------------
@pytest.mark.parametrize("library", LIBRARIES)
def test_every_wine_record_scores_as_the_library_itself_scores_it(wine, library):
    """All 178 wine records (not only the 16 samples), by record and by columns, against the
    library's own loader and predict on the same rows."""
    X, _ = wine_data()
    path = wine[library] / FILES[library]
    model = load(library, path)
    want = raw(library, path, X)
    by_columns = columns_scored(model, records_of(X))
    outcomes = score_batch(model, records_of(X))
    for k in range(3):
        np.testing.assert_allclose(by_record(outcomes, f"probability_{k}"), want[:, k], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(by_columns[f"probability_{k}"], want[:, k], rtol=1e-6, atol=1e-7)
    assert by_record(outcomes, "prediction").tolist() == want.argmax(axis=1).tolist()
    assert by_columns["prediction"].tolist() == want.argmax(axis=1).tolist()
    assert set(model.input_fields) == set(X.columns)


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_binary_classifier_gives_its_probability_and_margin(tmp_path, library):
    data = load_breast_cancer(as_frame=True)
    X = data.data.rename(columns=lambda c: c.replace(" ", "_"))
    train_X, train_y, test_X = held_out(X, data.target.to_numpy())
    path = save(library, train(library, OBJECTIVES["binary"][library], train_X, train_y), tmp_path / FILES[library])
    model = load(library, path)
    outcomes, by_columns = score_batch(model, records_of(test_X)), columns_scored(model, records_of(test_X))
    for name, want in (("probability", raw(library, path, test_X)), ("margin", raw(library, path, test_X, True))):
        np.testing.assert_allclose(by_record(outcomes, name), want, rtol=1e-6, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(by_columns[name], want, rtol=1e-6, atol=1e-7, err_msg=name)
    assert set(outcomes[0].outputs) == {"probability", "margin"}
    assert 0.05 < by_columns["probability"].mean() < 0.95  # both classes come up


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_regression_gives_its_prediction(tmp_path, library):
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    train_X, train_y, test_X = held_out(X, y.to_numpy())
    path = save(library, train(library, OBJECTIVES["regression"][library], train_X, train_y), tmp_path / FILES[library])
    model = load(library, path)
    want = raw(library, path, test_X)
    outcomes = score_batch(model, records_of(test_X))
    assert set(outcomes[0].outputs) == {"prediction"}
    np.testing.assert_allclose(by_record(outcomes, "prediction"), want, rtol=1e-6)
    np.testing.assert_allclose(columns_scored(model, records_of(test_X))["prediction"], want, rtol=1e-6)


def test_multi_softmax_gives_the_class_xgboost_gives_and_the_probabilities_behind_it(tmp_path):
    X, y = wine_data()
    path = save("xgboost", train("xgboost", {"objective": "multi:softmax", "num_class": 3}, X, y), tmp_path / "m.json")
    outcomes = score_batch(load("xgboost", path), records_of(X))
    assert by_record(outcomes, "prediction").tolist() == raw("xgboost", path, X).astype(int).tolist()
    total = sum(by_record(outcomes, f"probability_{k}") for k in range(3))
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_model_without_feature_names_takes_one_tensor(tmp_path, library):
    X, y = wine_data()
    features = X.to_numpy()
    path = save(library, train(library, OBJECTIVES["multiclass"][library], features, y), tmp_path / FILES[library])
    model = load(library, path)
    assert list(model.input_fields) == ["features"] and model.input_fields["features"].shape == (13,)
    rows = [{"features": row} for row in features.astype(np.float32)]
    want = raw(library, path, features.astype(np.float32))
    np.testing.assert_allclose(by_record(score_batch(model, rows), "probability_2"), want[:, 2], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(columns_scored(model, rows)["probability_2"], want[:, 2], rtol=1e-6, atol=1e-7)
    wrong = score_batch(model, [{"features": features[0][:5].astype(np.float32)}])[0].error
    assert isinstance(wrong, InputTypeError) and "shape [5], the model takes shape [13]" in str(wrong)
    explained = model.explain([model.prepare(row) for row in rows[:5]])
    assert explained[0]["features"].shape == (13,)
    for row, margin in zip(explained, raw(library, path, features[:5].astype(np.float32), True), strict=True):
        assert row["features"].sum() + row["baseline_score"] == pytest.approx(margin[row["prediction"]], abs=1e-5)


# ---- explanations ----------------------------------------------------------------------------
def additive(library: str, path: Path, X, explained: list[dict], names: list[str]) -> None:
    """Per record, the contributions add up to the library's own margin of the class explained,
    the class the library predicts."""
    margins = raw(library, path, X, margin=True)
    margins = margins.reshape(len(X), -1)
    tol = 1e-5 if library == "xgboost" else 1e-9  # XGBoost sums in float32
    assert len(explained) == len(X) > 0
    for row, margin in zip(explained, margins, strict=True):
        k = row.get("prediction", 0)
        assert k == margin.argmax()
        assert row["score"] == pytest.approx(margin[k], rel=1e-6, abs=tol)
        assert sum(row[n] for n in names) + row["baseline_score"] == pytest.approx(margin[k], rel=1e-6, abs=tol)


@pytest.mark.parametrize("library", LIBRARIES)
def test_contributions_add_up_to_the_margin_of_the_predicted_class(wine, library):
    """SHAP additivity on all 178 wine records, through the job's explanation machinery: the
    outputs are named after the inputs they attribute (what `model-store explain` draws)."""
    X, _ = wine_data()
    path = wine[library] / FILES[library]
    model = load(library, path)
    assert model.explains()
    outcomes = explain_into(model, records_of(X), score_batch(model, records_of(X)))
    explained = [{k[len("explanation."):]: v for k, v in o.outputs.items() if k.startswith("explanation.")}
                 for o in outcomes]
    assert set(explained[0]) == set(X.columns) | {"score", "baseline_score", "prediction"}
    assert [e["prediction"] for e in explained] == [o.outputs["prediction"] for o in outcomes]
    additive(library, path, X, explained, list(X.columns))
    assert any(abs(e["proline"]) > 0.1 for e in explained)  # not all zeros


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("task", ["binary", "regression"])
def test_contributions_add_up_to_the_margin_of_binary_and_regression_models(tmp_path, library, task):
    data = load_breast_cancer(as_frame=True) if task == "binary" else load_diabetes(as_frame=True)
    X = data.data.rename(columns=lambda c: c.replace(" ", "_"))
    train_X, train_y, test_X = held_out(X, data.target.to_numpy())
    path = save(library, train(library, OBJECTIVES[task][library], train_X, train_y), tmp_path / FILES[library])
    model = load(library, path)
    explained = model.explain([model.prepare(r) for r in records_of(test_X)])
    assert "prediction" not in explained[0]
    additive(library, path, test_X, explained, list(X.columns))


# ---- what rides in the artifact --------------------------------------------------------------
def copy_sample(wine: dict[str, Path], library: str, tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / FILES[library]
    shutil.copyfile(wine[library] / FILES[library], path)
    return path, load_samples(wine[library])


def embed(library: str, path: Path, properties: dict[str, str]) -> None:
    (add_xgboost_attributes if library == "xgboost" else add_lightgbm_properties)(path, properties)


@pytest.mark.parametrize("library", LIBRARIES)
def test_the_sample_passes_its_verification_and_one_that_disagrees_is_refused(wine, tmp_path, library):
    path, doc = copy_sample(wine, library, tmp_path)
    assert load_inline(path, TYPES[library], tmp_path).verified == len(doc["inputs"]) == 16
    wrong = [dict(e) for e in doc["expected"]]
    wrong[4]["probability_1"] += 0.25
    embed(library, path, {VERIFICATION_KEY: to_json(doc["inputs"], wrong)})
    with pytest.raises(VerificationError, match="sample 5 of 16: output 'probability_1'"):
        load_inline(path, TYPES[library], tmp_path)


@pytest.mark.parametrize("library", LIBRARIES)
def test_warm_up_inputs_ride_in_the_model(wine, tmp_path, library):
    path, doc = copy_sample(wine, library, tmp_path)
    embed(library, path, {gbdt.WARMUP_KEY: json.dumps(doc["inputs"][:3])})
    model = load(library, path)
    assert warm_up(model) == 3 and len(model.verification().inputs) == 16


def test_lightgbm_property_lines_leave_a_model_lightgbm_loads_as_before(wine):
    """The header lines survive "=" and newlines in their JSON, LightGBM itself loads the text and
    predicts the same, and writing a key again replaces it."""
    X, _ = wine_data()
    text = (wine["lightgbm"] / "model.txt").read_text()
    tricky = json.dumps({"a": "x=y\nz", "b": [1.5, 2]})
    written = with_properties(with_properties(text, {"scoring.test": '"old"'}), {"scoring.test": tricky})
    assert json.loads(header(written)["scoring.test"]) == json.loads(tricky)
    assert written.count("scoring.test=") == 1
    before, after = lgb.Booster(model_str=text), lgb.Booster(model_str=written)
    np.testing.assert_array_equal(after.predict(X), before.predict(X))


def test_threads_per_call_are_one_unless_the_environment_says(wine, monkeypatch):
    def xgboost_threads() -> str:
        booster = load("xgboost", wine["xgboost"] / "model.json")._booster
        return json.loads(booster.save_config())["learner"]["generic_param"]["nthread"]

    asked = []
    model = load("lightgbm", wine["lightgbm"] / "model.txt")
    predict = model._booster.predict
    model._booster.predict = lambda x, **kw: asked.append(kw["num_threads"]) or predict(x, **kw)
    model.predict([model.prepare(r) for r in load_samples(wine["lightgbm"])["inputs"][:2]])
    assert xgboost_threads() == "1" and asked == [1]
    monkeypatch.setenv("SCORING_XGBOOST_THREADS", "2")
    monkeypatch.setenv("SCORING_LIGHTGBM_THREADS", "2")
    assert xgboost_threads() == "2" and load("lightgbm", wine["lightgbm"] / "model.txt")._threads == 2


def test_the_store_names_an_xgboost_model_by_its_encoding(wine, tmp_path):
    """XGBoost picks its parser by the file's suffix: UBJSON is stored as model.ubj."""
    booster = xgb.Booster(model_file=str(wine["xgboost"] / "model.json"))
    ubj = save("xgboost", booster, tmp_path / "m.ubj")
    assert xgboost_encoding((wine["xgboost"] / "model.json").read_bytes()[:16]) == "json"
    assert xgboost_encoding(ubj.read_bytes()[:16]) == "ubj"
    repo = ModelRepository(tmp_path / "store")
    stored = [repo.publish("m", p, pb.XGBOOST, "wine").file for p in (wine["xgboost"] / "model.json", ubj)]
    assert stored == ["model.json", "model.ubj"]
    assert repo.publish("l", wine["lightgbm"] / "model.txt", pb.LIGHTGBM, "wine").file == "model.txt"
    assert artifact_file(pb.XGBOOST) == "model.json"
    inputs = load_samples(wine["xgboost"])["inputs"]
    from_ubj = score_batch(load("xgboost", repo.root / "m" / "2" / "model.ubj"), inputs)
    from_json = score_batch(load("xgboost", repo.root / "m" / "1" / "model.json"), inputs)
    assert [o.outputs for o in from_ubj] == [o.outputs for o in from_json]


# ---- what is refused -------------------------------------------------------------------------
class Touch:
    """Unpickled, it creates a file: a stand-in for what a hostile pickle could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _refuse_reading(*args, **kwargs):
    raise AssertionError("the library was asked to read the file")


def serialized(booster, how: str, marker: Path) -> bytes:
    if how == "pickle":
        return pickle.dumps(booster)
    if how == "hostile pickle":
        return pickle.dumps(Touch(marker), protocol=2)
    out = io.BytesIO()
    joblib.dump(booster, out, compress={"joblib": 0, "joblib zlib": 3, "joblib gzip": ("gzip", 3)}[how])
    return out.getvalue()


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("how", ["pickle", "hostile pickle", "joblib", "joblib zlib", "joblib gzip"])
def test_pickles_and_joblib_files_are_refused_before_the_library_reads_them(wine, tmp_path, library, how):
    booster = (xgb.Booster(model_file=str(wine[library] / FILES[library])) if library == "xgboost"
               else lgb.Booster(model_file=str(wine[library] / FILES[library])))
    marker = tmp_path / "unpickled"
    path = tmp_path / FILES[library]  # the name says it is a native model: the content says not
    path.write_bytes(serialized(booster, how, marker))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(xgb, "Booster", _refuse_reading)
        patch.setattr(lgb, "Booster", _refuse_reading)
        with pytest.raises(ModelLoadError) as refused:
            load(library, path)
    message = str(refused.value)
    assert "refused before the library reads it" in message and "runs whatever code" in message
    assert ("pickle" if "zlib" not in how and "gzip" not in how else how.split()[1] + "-compressed") in message
    assert "save_model(" in message
    assert not marker.exists()


def legacy_model(binf: bool) -> bytes:
    """The head of a model in XGBoost's deprecated binary format (learner.cc): the 136-byte
    LearnerModelParamLegacy, then the objective's and the booster's names, each after its length."""
    params = struct.pack("<fIiiiIIIi", 0.5, 13, 0, 0, 0, 1, 7, 1, 1) + bytes(25 * 4)
    assert len(params) == 136
    names = b"".join(struct.pack("<Q", len(n)) + n for n in (b"binary:logistic", b"gbtree"))
    return (b"binf" if binf else b"") + params + names + bytes(64)


@pytest.mark.parametrize("binf", [True, False])
def test_the_legacy_binary_format_is_refused(tmp_path, binf):
    path = tmp_path / "model.bin"
    path.write_bytes(legacy_model(binf))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(xgb, "Booster", _refuse_reading)
        with pytest.raises(ModelLoadError, match=r"refused before .* XGBoost's deprecated binary format.*"
                                                 r"save_model\('model.json'\)"):
            load("xgboost", path)


@pytest.mark.parametrize(("library", "data", "reason"), [
    ("xgboost", b'{"learner": 5}', "cannot be loaded by XGBoost: Invalid cast, from Integer to Object"),
    ("xgboost", b"{L\x00\x00\x00\x00\x00\x00\x00\x07learneri\x05}", "cannot be loaded by XGBoost: Invalid cast"),
    ("xgboost", b"PK\x03\x04 a zip file", r"refused .* neither XGBoost JSON nor UBJSON \(it starts with b'PK"),
    ("lightgbm", b"tree\nversion=v4\nnonsense", "cannot be loaded by LightGBM: Model file doesn't specify the number"),
    ("lightgbm", b"tree\n\xff\xfe", "cannot be loaded by LightGBM: 'utf-8' codec can't decode"),
    ("lightgbm", b'{"name": "tree"}', r"refused .* not a LightGBM text model"),
])
def test_corrupt_bytes_are_refused_with_the_library_s_reason(tmp_path, library, data, reason):
    path = tmp_path / "artifact"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match=reason) as refused:
        load(library, path)
    assert "Stack trace" not in str(refused.value)


CHILD_LOAD = """
import sys
from pathlib import Path
from contract import scoring_pb2 as pb
from scoring.backends.registry import backend_for
from scoring.errors import ModelLoadError
try:
    model = backend_for(int(sys.argv[1])).load(Path(sys.argv[2]))
    model.predict(model.warm_up_inputs())
except ModelLoadError as err:
    print(err)
"""


def load_in_child(library: str, path: Path) -> str:
    """What loading says, in a process of its own: the libraries' parsers abort or crash the
    process on some corrupt files, which the backends must keep from reaching them."""
    done = subprocess.run([sys.executable, "-c", CHILD_LOAD, str(TYPES[library]), str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"the process died ({done.returncode}): {done.stderr[-500:]}"
    return done.stdout


@pytest.mark.parametrize(("library", "encoding", "reason"), [
    ("xgboost", "json", "cannot be loaded by XGBoost"),
    ("xgboost", "ubj", "is not well-formed UBJSON, refused before XGBoost reads it: .* past the end"),
    ("lightgbm", "txt", "is truncated: it has no 'end of trees' line"),
])
def test_a_truncated_model_is_refused_and_the_process_lives(wine, tmp_path, library, encoding, reason):
    """Cut inside a tree. XGBoost's UBJSON reader and LightGBM's tree parser crashed the process
    (SIGSEGV) on some such files in a fuzz test, before the backends checked them."""
    booster = xgb.Booster(model_file=str(wine["xgboost"] / "model.json")) if library == "xgboost" else None
    whole = (bytes(booster.save_raw(encoding)) if booster else (wine[library] / FILES[library]).read_bytes())
    path = tmp_path / "artifact"
    path.write_bytes(whole[: int(len(whole) * 0.53)])
    assert re.search(reason, load_in_child(library, path))


def test_a_lightgbm_tree_it_cannot_parse_is_an_error_not_an_abort(wine, tmp_path):
    """LightGBM parses the trees in parallel by the header's tree_sizes, and an error there aborted
    the process; the backend has it parse them one by one, and checks it read them all."""
    text = (wine["lightgbm"] / "model.txt").read_text()
    path = tmp_path / "artifact"
    path.write_text(text.replace("left_child=", "left_kid=", 1))
    assert "cannot be loaded by LightGBM: Tree model string format error" in load_in_child("lightgbm", path)
    cut = text.index("\nTree=3\n")
    path.write_text(text[:cut] + text[text.index("\nend of trees"):])  # three trees of 60 left
    assert "is corrupt: LightGBM read 3 trees, its header names 60" in load_in_child("lightgbm", path)
