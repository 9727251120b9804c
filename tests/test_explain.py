"""Explanations: the sample models' own (integrated gradients), checked against what the
model's scoring signature does when the parts they point at are taken away."""

from __future__ import annotations

import base64
import io
import random

import numpy as np
import pytest
from PIL import Image

from contract import scoring_pb2 as pb
from contract.values import fill_map, make_record
from model_store import explain as drawing
from model_store.fetcher import ArtifactFetcher, FetchPolicy
from model_store.repository import pack_saved_model
from samples.build import DIGIT_SIZE, digit_jpegs, spam_corpus
from scoring.backends.registry import backend_for
from scoring.batch import Outcome, score_batch
from scoring.errors import ModelLoadError
from scoring.explain import ERROR, chosen, explain_into
from scoring.loader import DescriptorError, check_descriptor, load_servable
from tests.test_backends import load_inline

EXPLAINED_ROWS = 12  # records the attribution tests explain, drawn from the sample data


@pytest.fixture(scope="module")
def digits(samples, tmp_path_factory):
    target = tmp_path_factory.mktemp("digits") / "model.tar.gz"
    pack_saved_model(samples["digits-tf"] / "saved_model", target)
    images = digit_jpegs()[0]
    rows = [{"image_b64": images[i]} for i in random.Random(11).sample(range(len(images)), EXPLAINED_ROWS)]
    return backend_for(pb.TENSORFLOW_SAVED_MODEL).load(target), rows


@pytest.fixture(scope="module")
def spam(samples, tmp_path_factory):
    target = tmp_path_factory.mktemp("spam") / "model.tar.gz"
    pack_saved_model(samples["spam-tf"] / "saved_model", target)
    texts, _ = spam_corpus(EXPLAINED_ROWS, random.Random(12))  # not the corpus it was trained on (seeded apart)
    return backend_for(pb.TENSORFLOW_SAVED_MODEL).load(target), [{"text": t} for t in texts]


def explained(model, rows) -> list[dict]:
    outcomes = explain_into(model, rows, score_batch(model, rows))
    assert len(outcomes) == len(rows) > 0  # the tests' loops check every one of them
    assert all(o.ok and ERROR not in o.outputs for o in outcomes)
    return [o.outputs for o in outcomes]


def test_pixel_attributions_sum_to_the_score_they_explain(digits):
    """Integrated gradients' completeness: per record, the attributions add up to the
    predicted class's probability minus a black image's, and that probability is the one
    the scoring signature returned."""
    model, rows = digits
    for out in explained(model, rows):
        heat = out["explanation.image_b64"]
        assert heat.shape == (32, 32)
        assert out["explanation.label"] == out["label"]
        assert out["explanation.score"] == pytest.approx(out["confidence"], abs=1e-5)
        assert heat.sum() == pytest.approx(out["explanation.score"] - out["explanation.baseline_score"], abs=0.02)


def test_blacking_out_the_pixels_it_credits_costs_more_than_blacking_out_others(digits):
    """Faithfulness by the scoring signature alone: the 10% of pixels with the largest
    attributions, set to black, lower the predicted class's probability more than the same
    number of random lit pixels do."""
    model, rows = digits
    rng = np.random.default_rng(3)
    drops = {"credited": [], "random": []}
    for row, out in zip(rows, explained(model, rows), strict=True):
        image = drawing.image_of(row["image_b64"]).astype(np.float32)
        assert image.shape == (DIGIT_SIZE, DIGIT_SIZE)
        k = DIGIT_SIZE * DIGIT_SIZE // 10
        credited = np.argsort(out["explanation.image_b64"].ravel())[-k:]
        lit = np.flatnonzero(image.ravel() > 64)
        random = rng.choice(lit, size=min(k, lit.size), replace=False)
        for kind, pixels in (("credited", credited), ("random", random)):
            masked = image.ravel().copy()
            masked[pixels] = 0
            png = _png(Image.fromarray(masked.reshape(image.shape).astype(np.uint8)))
            p = explain_into(model, [{"image_b64": png}], score_batch(model, [{"image_b64": png}]))[0].outputs
            after = p["explanation.score"] if p["explanation.label"] == out["label"] else 0.0
            drops[kind].append(out["confidence"] - after)
    assert np.median(drops["credited"]) > 2 * np.median(drops["random"]), drops


def _png(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.urlsafe_b64encode(buffer.getvalue()).decode()


def test_token_attributions_point_at_the_words_that_moved_the_spam_score(spam):
    """Each token's weight, and removing the word with the largest weight moves the spam
    probability (scored by the scoring signature) the way its sign says."""
    model, rows = spam
    for row, out in zip(rows, explained(model, rows), strict=True):
        tokens = drawing.tokens_of(row["text"])
        weights = out["explanation.text"][:len(tokens)]
        assert np.all(out["explanation.text"][len(tokens):] == 0)
        assert out["explanation.total"] == pytest.approx(out["explanation.score"] - out["explanation.baseline_score"],
                                                         abs=1e-3)
        top = int(np.argmax(np.abs(weights)))
        without = " ".join(t for t in tokens if t != tokens[top])
        moved = score_batch(model, [{"text": without}])[0].outputs["spam_probability"] - out["spam_probability"]
        assert np.sign(moved) == -np.sign(weights[top]), (row["text"], tokens[top], weights[top], moved)


def test_a_stable_share_of_records_is_chosen():
    ids = [f"r-{i}" for i in range(20_000)]
    picked = [chosen(i, "m", 1, 0.1) for i in ids]
    assert 0.09 < sum(picked) / len(ids) < 0.11
    assert picked == [chosen(i, "m", 1, 0.1) for i in ids]
    assert all(chosen(i, "m", 1, 1.0) for i in ids[:100]) and not any(chosen(i, "m", 1, 0.0) for i in ids[:100])


def test_an_explanation_that_fails_leaves_the_score_and_says_why():
    class Flaky:
        def prepare(self, inputs):
            return dict(inputs)

        def explain(self, batch):
            if any(r["x"] < 0 for r in batch):
                raise ValueError("negative x")
            return [{"x": np.array([r["x"], float("nan")]) if r["x"] > 5 else np.array([r["x"]])} for r in batch]

    outcomes = [Outcome(outputs={"y": 1.0}), Outcome(outputs={"y": 2.0}), Outcome(outputs={"y": 3.0})]
    explain_into(Flaky(), [{"x": 1.0}, {"x": -1.0}, {"x": 9.0}], outcomes)
    assert outcomes[0].outputs["y"] == 1.0 and outcomes[0].outputs["explanation.x"].tolist() == [1.0]
    assert outcomes[1].outputs == {"y": 2.0, ERROR: "the explanation threw: negative x"}
    assert outcomes[2].outputs == {"y": 3.0, ERROR: "the explanation has non-finite output(s) ['x']"}


def test_asking_for_explanations_of_a_model_without_them_refuses_it(samples, tmp_path):
    data = (samples["wine-pmml"] / "model.pmml").read_bytes()
    d = pb.ModelDescriptor(name="m", data_type="d", version=1, model_type=pb.PMML, inline_bytes=data,
                           explain_fraction=0.01)
    with pytest.raises(ModelLoadError, match="asks for explanations of 1% of records, but the model has none"):
        load_servable(d, ArtifactFetcher(tmp_path / "cache", FetchPolicy.parse([])))
    d.explain_fraction = 1.5
    with pytest.raises(DescriptorError, match="explain_fraction 1.5 is not a fraction"):
        check_descriptor(d)


def test_without_explain_fraction_a_model_with_an_explanation_loads_as_before(samples, tmp_path):
    target = tmp_path / "model.tar.gz"
    pack_saved_model(samples["spam-tf"] / "saved_model", target)
    assert load_inline(target, pb.TENSORFLOW_SAVED_MODEL, tmp_path).explain_fraction == 0


@pytest.mark.parametrize("sample", ["digits-tf", "spam-tf"])
def test_the_picture_is_drawn_over_the_input(request, sample, tmp_path):
    model, rows = request.getfixturevalue(sample.split("-")[0])
    record = make_record("r-1", "d", rows[3])
    out = explained(model, rows[3:4])[0]
    result = pb.ScoringResult(record_id="r-1", data_type="d", model_name="m", model_version=1)
    fill_map(result.outputs, out)
    drawn = drawing.render(record, result, tmp_path / "out.png")
    assert Image.open(tmp_path / "out.png").size[0] > 500
    assert drawn == (["image_b64: a 32x32 heatmap over the image"] if sample == "digits-tf"
                     else [f"text: {len(drawing.tokens_of(rows[3]['text']))} of "
                           f"{len(drawing.tokens_of(rows[3]['text']))} tokens coloured"])
