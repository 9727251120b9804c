"""Builds the sample models and data from data sets that ship inside packages.

    python -m samples.build --out .run/samples      (`make models`)

Each sample lands in `<out>/<sample>/` with its artifact (`model.pmml`, `model.onnx`,
`model.json`, `model.txt` or a `saved_model/` directory) and `samples.json`: sample inputs and the training
framework's own predictions on them, to check the scoring backends against.

- wine-pmml:  scikit-learn (StandardScaler + GradientBoosting) on sklearn's wine data, as PMML (nyoka)
- wine-tf:    a Keras classifier on the same data and the same named inputs, as a SavedModel
- wine-onnx:  scikit-learn (StandardScaler + RandomForest) on the same data and inputs,
              converted to ONNX by skl2onnx (verification samples in its metadata properties)
- wine-xgboost: XGBoost's own multiclass booster on the same data and inputs, saved as JSON
              (verification samples in its attributes)
- wine-lightgbm: LightGBM's own multiclass booster on the same data and inputs, saved as text
              (verification samples in its header lines)
- wine-pmml-shallow: wine-pmml retrained with 2 trees of depth 1: a model that predicts
              differently (rollout demos and tests: a shadow that fails its gate)
- wine-tf-fragile: wine-tf with a bug: non-finite outputs when magnesium > 150, which none of
              its samples has (rollout demos and tests: a promoted model that starts failing)
- spam-tf:    a text classifier taking raw strings (vectorisation inside the graph)
- digits-tf:  an image classifier taking base64 JPEG strings (decode, resize, scale inside
              the graph), on sklearn's 8x8 digits rendered as JPEG
  Both also have an `explain` signature: integrated gradients of their score, per token of
  the text and per pixel of the image.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import shutil
import sys
from functools import partial
from pathlib import Path

import numpy as np

from contract.values import plain
from scoring.backends import onnx as onnx_backend
from scoring.backends.lightgbm import with_properties
from scoring.backends.tensorflow import VERIFICATION_FILE
from scoring.verification import VERIFICATION_KEY, to_json

SEED = 7
N_SAMPLES = 16
# Bumped when what a sample holds changes: an older build in the output folder is rebuilt.
# 2: the models carry their verification samples. 3: spam-tf and digits-tf have an `explain` signature.
FORMAT = 3
WINE_TARGET = "cultivar"


def wine_data():
    import pandas as pd
    from sklearn.datasets import load_wine

    data = load_wine()
    names = [n.replace("/", "_") for n in data.feature_names]
    return pd.DataFrame(data.data, columns=names), data.target


def write_samples(out: Path, meta: dict, inputs: list[dict], expected: list[dict]) -> None:
    """samples.json, and the same samples inside the model as its verification on load."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / "saved_model").is_dir():
        (out / "saved_model" / VERIFICATION_FILE).parent.mkdir(parents=True, exist_ok=True)
        (out / "saved_model" / VERIFICATION_FILE).write_text(to_json(inputs, expected))
    if (out / "model.onnx").exists():
        add_onnx_properties(out / "model.onnx", {onnx_backend.VERIFICATION_KEY: to_json(inputs, expected)})
    if (out / "model.pmml").exists():
        add_pmml_verification(out / "model.pmml", inputs, expected)
    if (out / "model.json").exists():
        add_xgboost_attributes(out / "model.json", {VERIFICATION_KEY: to_json(inputs, expected)})
    if (out / "model.txt").exists():
        add_lightgbm_properties(out / "model.txt", {VERIFICATION_KEY: to_json(inputs, expected)})
    doc = {**meta, "format": FORMAT, "inputs": inputs, "expected": expected}
    (out / "samples.json").write_text(json.dumps(doc, indent=1, default=plain))


def add_pmml_verification(path: Path, inputs: list[dict], expected: list[dict],
                          precision: float = 1e-4, zero_threshold: float = 1e-5) -> None:
    """A <ModelVerification> for the top-level model: the inputs and expected outputs, one
    row per sample (PMML 4.4, section "Model Verification")."""
    from lxml import etree

    tree = etree.parse(str(path))
    ns = etree.QName(tree.getroot()).namespace
    model = next(e for e in tree.getroot() if etree.QName(e).localname.endswith("Model"))
    verification = etree.SubElement(model, f"{{{ns}}}ModelVerification", recordCount=str(len(inputs)),
                                    fieldCount=str(len(inputs[0]) + len(expected[0])))
    fields = etree.SubElement(verification, f"{{{ns}}}VerificationFields")
    for name in inputs[0]:
        etree.SubElement(fields, f"{{{ns}}}VerificationField", field=name)
    for name in expected[0]:
        etree.SubElement(fields, f"{{{ns}}}VerificationField", field=name, precision=str(precision),
                         zeroThreshold=str(zero_threshold))
    table = etree.SubElement(verification, f"{{{ns}}}InlineTable")
    for given, want in zip(inputs, expected, strict=True):
        row = etree.SubElement(table, f"{{{ns}}}row")
        for name, value in {**given, **want}.items():
            value = plain(value) if isinstance(value, np.generic) else value
            etree.SubElement(row, f"{{{ns}}}{name}").text = value if isinstance(value, str) else repr(value)
    tree.write(str(path), xml_declaration=True, encoding="UTF-8")


def add_onnx_properties(path: Path, properties: dict[str, str]) -> None:
    """Set metadata properties of an ONNX model (where its verification samples travel)."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **properties})
    onnx.save(model, str(path))


def add_xgboost_attributes(path: Path, attributes: dict[str, str]) -> None:
    """Set attributes of an XGBoost model (where its verification samples travel)."""
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(path))
    booster.set_attr(**attributes)
    booster.save_model(str(path))


def add_lightgbm_properties(path: Path, properties: dict[str, str]) -> None:
    """Add header lines to a LightGBM model text (where its verification samples travel)."""
    path.write_text(with_properties(path.read_text(), properties))


def build_wine_pmml(out: Path, n_estimators: int = 30, max_depth: int = 2) -> None:
    from nyoka import skl_to_pmml
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = wine_data()
    pipeline = Pipeline(
        [
            ("scaler", StandardScaler()),
            ("clf", GradientBoostingClassifier(n_estimators=n_estimators, max_depth=max_depth,
                                               random_state=SEED)),
        ]
    ).fit(X, y)
    out.mkdir(parents=True, exist_ok=True)
    skl_to_pmml(pipeline, list(X.columns), WINE_TARGET, str(out / "model.pmml"))
    rows = X.sample(N_SAMPLES, random_state=SEED)
    proba = pipeline.predict_proba(rows)
    expected = [
        {**{f"probability_{k}": float(p[k]) for k in range(3)},
         f"predicted_{WINE_TARGET}": int(c)}
        for p, c in zip(proba, pipeline.predict(rows), strict=True)
    ]
    write_samples(out, {"model_type": "PMML", "data_type": "wine"},
                  rows.to_dict(orient="records"), expected)


def build_wine_onnx(out: Path) -> None:
    """A scikit-learn pipeline converted by skl2onnx, one [N, 1] float input per named
    feature (the records wine-pmml and wine-tf take) and the converter's default outputs:
    `output_label` and ZipMap probabilities."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = wine_data()
    pipeline = Pipeline([("scaler", StandardScaler()),
                         ("clf", RandomForestClassifier(n_estimators=20, max_depth=4, random_state=SEED))]).fit(X, y)
    onnx_model = convert_sklearn(pipeline, "wine-onnx", [(n, FloatTensorType([None, 1])) for n in X.columns],
                                 target_opset=17)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(onnx_model.SerializeToString())
    rows = X.sample(N_SAMPLES, random_state=SEED)
    proba = pipeline.predict_proba(rows.astype(np.float32))
    expected = [{"output_label": int(c), **{f"output_probability_{k}": float(p[k]) for k in range(3)}}
                for p, c in zip(proba, pipeline.predict(rows.astype(np.float32)), strict=True)]
    write_samples(out, {"model_type": "ONNX", "data_type": "wine"}, rows.to_dict(orient="records"), expected)


def multiclass_expected(probabilities: np.ndarray) -> list[dict]:
    """What the XGBoost and LightGBM backends output for a multiclass model's probabilities."""
    return [{**{f"probability_{k}": float(v) for k, v in enumerate(p)}, "prediction": int(p.argmax())}
            for p in probabilities]


def build_wine_xgboost(out: Path) -> None:
    """A booster trained by XGBoost itself on the named inputs (the DataFrame's columns become
    its feature names), saved in XGBoost's JSON format."""
    import xgboost as xgb

    X, y = wine_data()
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1, "seed": SEED}
    booster = xgb.train(params, xgb.DMatrix(X, label=y), num_boost_round=20)
    out.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out / "model.json"))
    rows = X.sample(N_SAMPLES, random_state=SEED)
    write_samples(out, {"model_type": "XGBOOST", "data_type": "wine"}, rows.to_dict(orient="records"),
                  multiclass_expected(booster.predict(xgb.DMatrix(rows))))


def build_wine_lightgbm(out: Path) -> None:
    """A booster trained by LightGBM itself on the named inputs, saved in its text format."""
    import lightgbm as lgb

    X, y = wine_data()
    params = {"objective": "multiclass", "num_class": 3, "num_leaves": 7, "min_data_in_leaf": 5,
              "num_threads": 1, "seed": SEED, "deterministic": True, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(X, label=y), num_boost_round=20)
    out.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out / "model.txt"))
    rows = X.sample(N_SAMPLES, random_state=SEED)
    write_samples(out, {"model_type": "LIGHTGBM", "data_type": "wine"}, rows.to_dict(orient="records"),
                  multiclass_expected(booster.predict(rows)))


def build_wine_tf(out: Path) -> None:
    import keras
    import tensorflow as tf

    X, y = wine_data()
    names = list(X.columns)
    keras.utils.set_random_seed(SEED)
    norm = keras.layers.Normalization()
    norm.adapt(X.values.astype("float32"))
    model = keras.Sequential([
        keras.Input(shape=(len(names),)),
        norm,
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(X.values.astype("float32"), y, epochs=60, batch_size=32, verbose=0)

    spec = {n: tf.TensorSpec([None], tf.float32, name=n) for n in names}

    @tf.function(input_signature=[spec])
    def serve(features):
        x = tf.stack([features[n] for n in names], axis=1)
        probabilities = model(x)
        return {
            "probabilities": probabilities,
            "label": tf.argmax(probabilities, axis=1),
            "confidence": tf.reduce_max(probabilities, axis=1),
        }

    export_saved_model(out, model, serve)
    rows = X.sample(N_SAMPLES, random_state=SEED)
    proba = model.predict(rows.values.astype("float32"), verbose=0)
    expected = [
        {"probabilities": p.tolist(), "label": int(p.argmax()), "confidence": float(p.max())}
        for p in proba
    ]
    write_samples(out, {"model_type": "TENSORFLOW_SAVED_MODEL", "data_type": "wine"},
                  rows.to_dict(orient="records"), expected)


def build_wine_tf_fragile(out: Path) -> None:
    """wine-tf's own SavedModel, re-exported behind a guard that returns NaN for magnesium > 150."""
    import tensorflow as tf

    original = build_all(out.parent, ["wine-tf"])["wine-tf"]
    model = tf.saved_model.load(str(original / "saved_model"))
    inner = model.signatures["serving_default"]
    spec = {name: tf.TensorSpec([None], tf.float32, name=name)
            for name in inner.structured_input_signature[1]}

    @tf.function(input_signature=[spec])
    def serve(features):
        outputs = inner(**features)
        broken = tf.reshape(features["magnesium"] > 150.0, [-1, 1])
        probabilities = tf.where(broken, tf.fill(tf.shape(outputs["probabilities"]), float("nan")),
                                 outputs["probabilities"])
        return {**outputs, "probabilities": probabilities}

    export_saved_model(out, model, serve)
    doc = json.loads((original / "samples.json").read_text())
    write_samples(out, {"model_type": "TENSORFLOW_SAVED_MODEL", "data_type": "wine"},
                  doc["inputs"], doc["expected"])


def export_saved_model(out: Path, model, serve, warmup_inputs: list[dict] | None = None, explain=None) -> None:
    """Save `serve` as the serving_default signature (and `explain`, if given, as the
    `explain` signature); warm-up inputs go to assets.extra/, where TF Serving keeps its
    warm-up requests."""
    import tensorflow as tf

    holder = tf.Module()
    holder.model = model
    holder.serve = serve
    signatures = {"serving_default": serve}
    if explain is not None:
        holder.explain = explain
        signatures["explain"] = explain
    target = out / "saved_model"
    tf.saved_model.save(holder, str(target), signatures=signatures)
    if warmup_inputs:
        extra = target / "assets.extra"
        extra.mkdir(exist_ok=True)
        (extra / "warmup_inputs.json").write_text(json.dumps(warmup_inputs))


IG_STEPS = 64
EXPLAINED_TOKENS = 32  # a text's first tokens get an attribution each


def integrated_gradients(score_of, x, steps: int = IG_STEPS):
    """Integrated gradients (Sundararajan et al., 2017) of `score_of` (a batch of inputs ->
    one score each) from an all-zero baseline to `x`, by the trapezoid rule over `steps`.
    Returns (attributions shaped like x, score of x, score of the baseline): the
    attributions of a record sum to score - baseline score, up to the rule's error."""
    import tensorflow as tf

    x = tf.cast(x, tf.float32)
    n = tf.shape(x)[0]
    alphas = tf.reshape(tf.linspace(0.0, 1.0, steps + 1), [-1] + [1] * len(x.shape))
    path = tf.reshape(alphas * x[None], tf.concat([[-1], tf.shape(x)[1:]], axis=0))  # steps+1 copies, alpha-major
    with tf.GradientTape() as tape:
        tape.watch(path)
        scores = score_of(path)
    grads = tf.reshape(tape.gradient(scores, path), tf.concat([[steps + 1, n], tf.shape(x)[1:]], axis=0))
    average = tf.reduce_mean((grads[:-1] + grads[1:]) / 2, axis=0)
    scores = tf.reshape(scores, [steps + 1, n])
    return x * average, scores[-1], scores[0]


def standardize(text):
    """TextVectorization's default standardisation: lower case, punctuation stripped."""
    import tensorflow as tf

    return tf.strings.regex_replace(tf.strings.lower(text), r"[!\"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~']", "")


SPAM_WORDS = ["free", "winner", "prize", "cash", "offer", "click", "urgent", "claim", "bonus",
              "credit", "loan", "cheap", "deal", "limited", "guaranteed", "selected", "reward"]
HAM_WORDS = ["meeting", "tomorrow", "lunch", "report", "project", "family", "weekend", "call",
             "thanks", "review", "schedule", "dinner", "notes", "team", "draft", "plan", "see"]
FILLER = ["the", "a", "you", "we", "to", "for", "is", "on", "your", "this", "now", "at", "our"]


def spam_corpus(n: int, rng: random.Random) -> tuple[list[str], list[int]]:
    """A synthetic corpus: spam and ham sentences from two vocabularies plus shared filler."""
    texts, labels = [], []
    for _ in range(n):
        spam = rng.random() < 0.5
        topic = SPAM_WORDS if spam else HAM_WORDS
        other = HAM_WORDS if spam else SPAM_WORDS
        words = rng.sample(topic, 3) + rng.sample(FILLER, 4) + ([rng.choice(other)] if rng.random() < 0.3 else [])
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(int(spam))
    return texts, labels


def build_spam_tf(out: Path) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    texts, labels = spam_corpus(2000, random.Random(SEED))
    vectorize = keras.layers.TextVectorization(max_tokens=200, output_mode="multi_hot")
    vectorize.adapt(texts)
    vocabulary = vectorize.vocabulary_size()
    classifier = keras.Sequential([keras.Input(shape=(vocabulary,)), keras.layers.Dense(1, activation="sigmoid")])
    classifier.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    classifier.fit(vectorize(tf.constant(texts)), np.array(labels), epochs=20, batch_size=64, verbose=0)

    spec = [{"text": tf.TensorSpec([None], tf.string, name="text")}]

    @tf.function(input_signature=spec)
    def serve(inputs):
        p = tf.squeeze(classifier(vectorize(inputs["text"])), axis=1)
        return {"spam_probability": p, "label": tf.where(p >= 0.5, "spam", "ham")}

    # Token ids as multi_hot counts them: [UNK] is 0, the vocabulary follows.
    lookup = keras.layers.StringLookup(vocabulary=vectorize.get_vocabulary()[1:], num_oov_indices=1)

    @tf.function(input_signature=spec)
    def explain(inputs):
        """Integrated gradients of the spam probability over the multi-hot input, from the
        empty text; each of the first EXPLAINED_TOKENS tokens gets its word's attribution."""
        x = vectorize(inputs["text"])
        attributions, score, baseline_score = integrated_gradients(
            lambda v: tf.squeeze(classifier(v), axis=1), x)
        tokens = tf.strings.split(standardize(inputs["text"])).to_tensor("", shape=[None, EXPLAINED_TOKENS])
        per_token = tf.gather(attributions, lookup(tokens), batch_dims=1)
        return {"text": tf.where(tokens == "", 0.0, per_token), "total": tf.reduce_sum(attributions, axis=1),
                "score": score, "baseline_score": baseline_score}

    holder_model = tf.Module()
    holder_model.vectorize = vectorize
    holder_model.classifier = classifier
    holder_model.lookup = lookup
    export_saved_model(out, holder_model, serve, explain=explain)
    samples, _ = spam_corpus(N_SAMPLES, random.Random(SEED + 1))
    p = classifier.predict(vectorize(tf.constant(samples)), verbose=0)[:, 0]
    expected = [{"spam_probability": float(v), "label": "spam" if v >= 0.5 else "ham"} for v in p]
    write_samples(out, {"model_type": "TENSORFLOW_SAVED_MODEL", "data_type": "text"},
                  [{"text": t} for t in samples], expected)


DIGIT_SIZE = 32


def digit_jpegs() -> tuple[list[str], np.ndarray]:
    """sklearn's 8x8 digits, upscaled and encoded as base64 (URL-safe) JPEG strings."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    encoded = []
    for img in digits.images:
        pixels = (img * (255.0 / 16.0)).astype("uint8")
        buf = io.BytesIO()
        Image.fromarray(pixels, mode="L").resize((DIGIT_SIZE, DIGIT_SIZE)).save(buf, "JPEG", quality=95)
        encoded.append(base64.urlsafe_b64encode(buf.getvalue()).decode())
    return encoded, digits.target


def build_digits_tf(out: Path) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)

    def preprocess(b64: tf.Tensor) -> tf.Tensor:
        def one(s):
            image = tf.io.decode_jpeg(tf.io.decode_base64(s), channels=1)
            image = tf.image.resize(image, [DIGIT_SIZE, DIGIT_SIZE])
            return tf.cast(image, tf.float32) / 255.0
        return tf.map_fn(one, b64, fn_output_signature=tf.TensorSpec([DIGIT_SIZE, DIGIT_SIZE, 1], tf.float32))

    images, target = digit_jpegs()
    x = preprocess(tf.constant(images))
    model = keras.Sequential([
        keras.Input(shape=(DIGIT_SIZE, DIGIT_SIZE, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, target, epochs=5, batch_size=64, verbose=0)

    spec = [{"image_b64": tf.TensorSpec([None], tf.string, name="image_b64")}]

    @tf.function(input_signature=spec)
    def serve(inputs):
        p = model(preprocess(inputs["image_b64"]))
        return {"label": tf.argmax(p, axis=1), "confidence": tf.reduce_max(p, axis=1)}

    @tf.function(input_signature=spec)
    def explain(inputs):
        """Integrated gradients of the predicted class's probability over the pixels, from a
        black image."""
        x = preprocess(inputs["image_b64"])
        label = tf.argmax(model(x), axis=1)
        attributions, score, baseline_score = integrated_gradients(
            lambda v: tf.gather(model(v), tf.tile(label, [tf.shape(v)[0] // tf.shape(label)[0]]), batch_dims=1), x)
        return {"image_b64": tf.squeeze(attributions, axis=3), "label": label, "score": score,
                "baseline_score": baseline_score}

    sample_idx = list(range(0, len(images), len(images) // N_SAMPLES))[:N_SAMPLES]
    samples = [images[i] for i in sample_idx]
    export_saved_model(out, model, serve, warmup_inputs=[{"image_b64": s} for s in samples[:2]], explain=explain)
    p = model.predict(preprocess(tf.constant(samples)), verbose=0)
    expected = [{"label": int(v.argmax()), "confidence": float(v.max())} for v in p]
    write_samples(out, {"model_type": "TENSORFLOW_SAVED_MODEL", "data_type": "image"},
                  [{"image_b64": s} for s in samples], expected)


BUILDERS = {
    "wine-pmml": build_wine_pmml,
    "wine-tf": build_wine_tf,
    "wine-onnx": build_wine_onnx,
    "wine-xgboost": build_wine_xgboost,
    "wine-lightgbm": build_wine_lightgbm,
    "wine-pmml-shallow": partial(build_wine_pmml, n_estimators=2, max_depth=1),
    "wine-tf-fragile": build_wine_tf_fragile,
    "spam-tf": build_spam_tf,
    "digits-tf": build_digits_tf,
}


def build_all(out: Path, only: list[str] | None = None) -> dict[str, Path]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    built = {}
    for name in only or BUILDERS:
        target = out / name
        if _format(target / "samples.json") != FORMAT:
            shutil.rmtree(target, ignore_errors=True)
            BUILDERS[name](target)
        built[name] = target
    return built


def _format(samples: Path) -> int | None:
    try:
        return json.loads(samples.read_text()).get("format")
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(".run/samples"))
    parser.add_argument("--only", nargs="*", choices=sorted(BUILDERS))
    args = parser.parse_args(argv)
    for name, path in build_all(args.out, args.only).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
