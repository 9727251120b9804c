"""`model-store explain --record-id ID --png out.png`: a record's explanation as a picture.

Finds the record's result on the scores topic and the record itself on the data topic,
then draws each `explanation.<input>` output over that input: over the image for an image
input (a base64 JPEG/PNG string or bytes), over the words for a text input (one weight per
token, in order), as bars for numeric inputs. Red pushed the explained score up, blue down.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path

import numpy as np

from contract import scoring_pb2 as pb
from contract.json_records import decode_record, read_result
from contract.values import PyValue, inputs_of, to_python
from model_store.kafka_io import Kafka, consume

PREFIX = "explanation."
PUNCTUATION = re.compile(r"[!\"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~']")  # TextVectorization's default


def find(kafka: Kafka, topic: str, record_id: str, read, timeout_s: float):
    """The last message on `topic` (from its beginning) that is about `record_id`."""
    found = None
    for value in consume(kafka, topic, None, timeout_s):
        try:
            message = read(value)
        except Exception:  # noqa: BLE001 - other messages on the topic: not ours
            continue
        if message.record_id == record_id:
            found = message
    return found


def explanations(result: pb.ScoringResult) -> dict[str, np.ndarray]:
    return {k[len(PREFIX):]: np.asarray(to_python(v), dtype=np.float64) for k, v in result.outputs.items()
            if k.startswith(PREFIX) and v.WhichOneof("kind") in ("tensor_value", "double_value")}


def tokens_of(text: str) -> list[str]:
    """The words a text model standardises its input to: lower case, punctuation stripped."""
    return PUNCTUATION.sub("", text.lower()).split()


def image_of(value: PyValue) -> np.ndarray | None:
    """A decoded image, if the input is one (bytes or base64 text of a JPEG/PNG)."""
    from PIL import Image, UnidentifiedImageError

    data = value
    if isinstance(value, str):
        try:
            data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            return None
    if not isinstance(data, bytes):
        return None
    try:
        return np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    except (UnidentifiedImageError, OSError):
        return None


def render(record: pb.DataRecord, result: pb.ScoringResult, png: Path) -> list[str]:
    """Draws every explanation of the result over its input; returns what was drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inputs = inputs_of(record)
    parts = {name: a for name, a in explanations(result).items() if name in inputs}
    if not parts:
        raise ValueError(f"result {result.record_id} carries no explanation of its inputs "
                         f"(outputs: {sorted(result.outputs)}); was the model published with --explain-fraction?")
    fig, axes = plt.subplots(len(parts), 1, figsize=(9, 3.2 * len(parts)), squeeze=False)
    drawn = []
    for ax, (name, attributions) in zip(axes[:, 0], parts.items(), strict=True):
        drawn.append(_draw(ax, name, inputs[name], attributions))
    score = {k: to_python(v) for k, v in result.outputs.items() if not k.startswith(PREFIX)}
    fig.suptitle(f"{result.record_id}: {result.model_name} v{result.model_version}  "
                 + "  ".join(f"{k}={_short(v)}" for k, v in sorted(score.items())), fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return drawn


def _draw(ax, name: str, value: PyValue, attributions: np.ndarray) -> str:
    image = image_of(value)
    if image is not None and attributions.ndim == 2:
        return _image(ax, name, image, attributions)
    if isinstance(value, str) and attributions.ndim == 1:
        return _tokens(ax, name, tokens_of(value), attributions)
    return _bars(ax, name, attributions)


def _image(ax, name: str, image: np.ndarray, attributions: np.ndarray) -> str:
    from PIL import Image

    limit = np.abs(attributions).max() or 1.0
    heat = np.asarray(Image.fromarray(attributions.astype(np.float32)).resize(image.shape[::-1], Image.BILINEAR))
    ax.axis("off")
    ax.set_title(f"{name}: the input, and the attribution per pixel over it")
    plain, over = ax.inset_axes([0.02, 0, 0.4, 0.92]), ax.inset_axes([0.46, 0, 0.4, 0.92])
    plain.imshow(image, cmap="gray")
    over.imshow(image, cmap="gray")
    shown = over.imshow(heat, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.6)
    ax.figure.colorbar(shown, cax=ax.inset_axes([0.88, 0.05, 0.02, 0.82]), label="attribution")
    plain.axis("off")
    over.axis("off")
    return f"{name}: a {attributions.shape[0]}x{attributions.shape[1]} heatmap over the image"


def _tokens(ax, name: str, tokens: list[str], attributions: np.ndarray) -> str:
    import matplotlib.pyplot as plt

    limit = np.abs(attributions).max() or 1.0
    colour = plt.get_cmap("bwr")
    x = 0.01
    for i, token in enumerate(tokens):
        weight = attributions[i] if i < len(attributions) else None
        face = colour(0.5 + weight / (2 * limit)) if weight is not None else (0.85, 0.85, 0.85, 1)
        text = ax.text(x, 0.5, token, fontsize=13, va="center", transform=ax.transAxes,
                       bbox={"facecolor": face, "edgecolor": "none", "pad": 3})
        box = text.get_window_extent(renderer=ax.figure.canvas.get_renderer()).transformed(ax.transAxes.inverted())
        x = box.x1 + 0.012
    ax.set_title(f"{name}: attribution per token (red pushed the score up, blue down; grey: not explained)")
    ax.axis("off")
    return f"{name}: {min(len(tokens), len(attributions))} of {len(tokens)} tokens coloured"


def _bars(ax, name: str, attributions: np.ndarray) -> str:
    flat = attributions.ravel()
    ax.bar(range(flat.size), flat, color=["tab:red" if v >= 0 else "tab:blue" for v in flat])
    ax.set_title(f"{name}: attribution per element")
    return f"{name}: {flat.size} bars"


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, np.ndarray):
        return f"[{value.size} values]"
    return str(value)


def explain(kafka: Kafka, scores_topic: str, data_topic: str, record_id: str, png: Path,
            timeout_s: float = 10) -> int:
    result = find(kafka, scores_topic, record_id, read_result, timeout_s)
    if result is None:
        print(f"no result for record {record_id!r} on {scores_topic}")
        return 1
    record = find(kafka, data_topic, record_id, lambda v: decode_record(v)[0], timeout_s)
    if record is None:
        print(f"record {record_id!r} is not on {data_topic} (any more): its input cannot be drawn")
        return 1
    for line in render(record, result, png):
        print(line)
    print(f"wrote {png}")
    return 0
