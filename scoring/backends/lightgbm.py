"""LightGBM models.

The artifact is one file in LightGBM's own text format (`booster.save_model("model.txt")`),
which starts with a `tree` line. Anything else is refused before LightGBM reads a byte: a
pickle or a joblib file (which runs code when loaded), or any other file.

Inputs, outputs and the explanation: scoring.backends.gbdt. A model whose feature names are
LightGBM's defaults (`Column_0`, `Column_1`, ...: it was trained without names) takes the
`features` tensor. `binary` is a binary classifier, `multiclass` and `multiclassova`
multiclass ones; any other objective gives `prediction`, the booster's own output.

Warm-up inputs and verification samples ride in the model text as header lines,
`scoring.verification=<JSON>`: LightGBM's loader reads each `key=value` line before the first
tree and ignores keys it does not know, so the artifact stays one file LightGBM loads as
before (`with_properties` writes them; LightGBM drops them when it saves the model again).

A call runs on one thread unless SCORING_LIGHTGBM_THREADS says otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scoring.backends.base import LoadedModel, ModelBackend
from scoring.backends.gbdt import TreeModel, python_serialized, refused, threads
from scoring.errors import ModelLoadError

THREADS_VARIABLE = "SCORING_LIGHTGBM_THREADS"
MULTICLASS = {"multiclass", "multiclassova"}
SAVE = "booster.save_model('model.txt')"
PROPERTY_PREFIX = "scoring."
SECTIONS = [(b"\nTree=", b"\nend of trees"), (b"\nparameters:", b"\nend of parameters")]
ESCAPED_EQUALS = "\\u003d"  # "=" inside a JSON string, escaped: LightGBM refuses a header line with two


def _header_end(text: str) -> int:
    """Where the header ends: the newline before the first tree (or the end of trees)."""
    ends = [i for i in (text.find("\nTree="), text.find("\nend of trees")) if i >= 0]
    return min(ends, default=len(text))


def header(text: str) -> dict[str, str]:
    """The model text's header, `key=value` lines, as LightGBM reads it."""
    pairs = (line.split("=", 1) for line in text[:_header_end(text)].split("\n") if "=" in line)
    return {key: value.rstrip("\r") for key, value in pairs}


def with_properties(text: str, properties: Mapping[str, str]) -> str:
    """The model text with `properties` (JSON texts, by key) as header lines, replacing any of the
    same keys; each value re-encoded as one line of the same JSON without "="."""
    end = _header_end(text)
    kept = [line for line in text[:end].split("\n") if line and line.split("=", 1)[0] not in properties]
    added = [f"{key}={json.dumps(json.loads(value)).replace('=', ESCAPED_EQUALS)}" for key, value in properties.items()]
    return "\n".join([*kept, *added, ""]) + text[end:]


def without_tree_sizes(text: str) -> str:
    """The model text without its `tree_sizes` line, which only lets LightGBM parse the trees in
    parallel: there a tree it cannot parse aborts the process (its error is thrown inside an
    OpenMP loop); without the line it parses them one by one and raises an error."""
    end = _header_end(text)
    at = text.rfind("\ntree_sizes=", 0, end)
    return text if at < 0 else text[:at] + text[text.index("\n", at + 1):]


class LightGBMModel(TreeModel):
    # LightGBM's thresholds are doubles: a float32 input could land across one a double does not.
    dtype = np.float64

    def __init__(self, booster: Any, fields: Mapping[str, str], where: str) -> None:
        objective, *options = fields.get("objective", "").split() or [""]
        task = "binary" if objective == "binary" else "multiclass" if objective in MULTICLASS else "other"
        names = booster.feature_name()
        unnamed = names == [f"Column_{i}" for i in range(len(names))]
        properties = {k: v for k, v in fields.items() if k.startswith(PROPERTY_PREFIX)}
        super().__init__(booster, where, None if unnamed else names, booster.num_feature(), task,
                         booster.num_model_per_iteration(), properties)
        self.sigmoid = float(dict(o.split(":", 1) for o in options if ":" in o).get("sigmoid", 1.0))
        self._threads = threads(THREADS_VARIABLE)

    def _predict(self, x: np.ndarray, **kwargs: bool) -> np.ndarray:
        return self._booster.predict(x, num_threads=self._threads, **kwargs)

    def _margin(self, x: np.ndarray) -> np.ndarray:
        return self._predict(x, raw_score=True)

    def _value(self, x: np.ndarray) -> np.ndarray:
        return self._predict(x)

    def _contributions(self, x: np.ndarray) -> np.ndarray:
        return self._predict(x, pred_contrib=True)


class LightGBMBackend(ModelBackend):
    def load(self, artifact: Path, signature_name: str = "") -> LoadedModel:
        import lightgbm as lgb

        where = f"LightGBM model {artifact.name}"
        data = artifact.read_bytes()
        if not data.startswith((b"tree\n", b"tree\r\n")):
            what = python_serialized(data) or f"not a LightGBM text model (it starts with {data[:8]!r}, not a 'tree' line)"
            raise refused(where, what, SAVE)
        cut = next((end for start, end in SECTIONS if start in data and end not in data), None)
        if cut:  # LightGBM would read a cut section past the end of the text
            raise ModelLoadError(f"{where} is truncated: it has no {cut.decode().strip()!r} line")
        try:
            text = data.decode("utf-8")
            fields = header(text)
            booster = lgb.Booster(model_str=without_tree_sizes(text))
        except Exception as err:  # noqa: BLE001 - LightGBMError, UnicodeDecodeError, ...
            raise ModelLoadError(f"{where} cannot be loaded by LightGBM: {err}") from err
        declared = len(fields.get("tree_sizes", "").split())
        if declared and booster.num_trees() != declared:
            raise ModelLoadError(f"{where} is corrupt: LightGBM read {booster.num_trees()} trees, its header "
                                 f"names {declared}")
        return LightGBMModel(booster, fields, where)
