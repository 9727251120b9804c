"""What the XGBoost and LightGBM backends share: refusing pickles before a library reads a
byte, inputs by feature name, outputs by what the model predicts, feature contributions as
the explanation, and warm-up inputs and verification samples carried inside the model.

Inputs: one float input per feature, by the model's own feature names, fed to the library as
one matrix in the model's feature order (of the precision the library compares in: float32
for XGBoost, float64 for LightGBM). A model without feature names takes one
tensor input, `features`, of shape [n_features].

Outputs, one library call per batch:
- a binary classifier: `probability` (of class 1) and `margin` (the raw score, log-odds);
- a multiclass classifier: `probability_<k>` per class k, and `prediction`, the most probable k;
- anything else (regression, ranking, counts, ...): `prediction`, the library's own output.

The explanation is the libraries' own tree SHAP: per record one output per input, named after
it (a float per feature, or a tensor for `features`), and `score`, the margin they explain,
and `baseline_score`, the bias (the margin of an average record): the contributions add up
to score - baseline_score. A multiclass model explains its predicted class (`prediction`).
"""

from __future__ import annotations

import json
import os
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from scoring.backends.base import InputField, LoadedModel, Outputs
from scoring.errors import ModelLoadError
from scoring.verification import Verification, from_properties, with_tensors

WARMUP_KEY = "scoring.warmup_inputs"
TENSOR_INPUT = "features"
EXPLANATION_EXTRAS = ("score", "baseline_score", "prediction")
Task = Literal["binary", "multiclass", "other"]

# The first bytes of what joblib.dump(..., compress=...) writes around a pickle, by compressor.
COMPRESSED = {b"\x78\x01": "zlib", b"\x78\x5e": "zlib", b"\x78\x9c": "zlib", b"\x78\xda": "zlib",
              b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"]\x00\x00": "lzma",
              b"\x04\x22\x4d\x18": "lz4"}


def python_serialized(head: bytes) -> str | None:
    """What the file is, and why that is refused, if it is a pickle or a compressed one (joblib)."""
    runs = "unpickling runs whatever code the file names"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return f"a Python pickle (as pickle.dump and joblib.dump write): {runs}"
    for magic, name in COMPRESSED.items():
        if head.startswith(magic):
            return f"a {name}-compressed file (as joblib.dump(..., compress=...) writes around a pickle): {runs}"
    return None


def refused(where: str, what: str, save: str) -> ModelLoadError:
    return ModelLoadError(f"{where} is refused before the library reads it: it is {what}. "
                          f"Save the model in the library's own format: {save}")


def threads(variable: str) -> int:
    """Threads per library call: one, unless the environment says otherwise (a streaming worker
    shares its cores with Flink and with the other data types' models)."""
    return int(os.environ.get(variable, "1"))


class TreeModel(LoadedModel):
    """A boosted-trees model; a subclass makes the library calls."""

    dtype: type = np.float32  # the inputs' precision where the library compares them with its splits

    def __init__(self, booster: Any, where: str, features: Sequence[str] | None, n_features: int,
                 task: Task, outputs: int, properties: Mapping[str, str]) -> None:
        self._booster = booster
        self._where = where
        self._features = list(features) if features else None
        self._n_features = n_features
        self.task = task
        self._outputs = outputs  # margins per record: classes of a multiclass model, else targets
        self._properties = dict(properties)
        self.input_fields = ({name: InputField(name, "float") for name in self._features} if self._features
                             else {TENSOR_INPUT: InputField(TENSOR_INPUT, "float", (n_features,))})
        self.sigmoid = 1.0  # a binary model's probability is 1 / (1 + exp(-sigmoid * margin))

    @abstractmethod
    def _margin(self, x: np.ndarray) -> np.ndarray:
        """The raw scores: (rows,), or (rows, outputs) for more than one output."""

    @abstractmethod
    def _value(self, x: np.ndarray) -> np.ndarray:
        """The library's own prediction: a multiclass model's probabilities (rows, classes)."""

    @abstractmethod
    def _contributions(self, x: np.ndarray) -> np.ndarray:
        """SHAP values, the bias last: anything that reshapes to (rows, outputs, features + 1)."""

    def predict(self, batch: Sequence[dict[str, Any]]) -> list[Outputs]:
        outputs = self.predict_columns(self._columns(batch), len(batch))
        listed = {name: list(column) if column.ndim > 1 else column.tolist() for name, column in outputs.items()}
        return [{name: values[i] for name, values in listed.items()} for i in range(len(batch))]

    def predict_columns(self, columns: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        x = self._matrix(columns, rows)
        if self.task == "binary":
            margin = self._margin(x)
            return {"probability": 1.0 / (1.0 + np.exp(-self.sigmoid * margin.astype(np.float64))),
                    "margin": margin}
        value = self._value(x)
        if self.task == "multiclass":
            by_class = np.ascontiguousarray(value.T)
            return {**{f"probability_{k}": p for k, p in enumerate(by_class)}, "prediction": value.argmax(axis=1)}
        return {"prediction": value}

    def explains(self) -> bool:
        single = self.task == "multiclass" or self._outputs == 1  # which target would a multi-target one explain?
        return single and not set(EXPLANATION_EXTRAS) & set(self.input_fields)

    def explain(self, batch: Sequence[dict[str, Any]]) -> list[Outputs]:
        rows = len(batch)
        x = self._matrix(self._columns(batch), rows)
        shap = self._contributions(x).reshape(rows, self._outputs, self._n_features + 1)
        margin = self._margin(x).reshape(rows, self._outputs)
        explained = margin.argmax(axis=1)
        picked = shap[np.arange(rows), explained]
        out = []
        for i in range(rows):
            row = self._attributions(picked[i, :-1])
            row.update(score=float(margin[i, explained[i]]), baseline_score=float(picked[i, -1]))
            if self.task == "multiclass":
                row["prediction"] = int(explained[i])
            out.append(row)
        return out

    def warm_up_inputs(self) -> list[dict[str, Any]]:
        if WARMUP_KEY in self._properties:
            try:
                return [with_tensors(row) for row in json.loads(self._properties[WARMUP_KEY])]
            except (ValueError, TypeError, AttributeError) as err:
                raise ModelLoadError(f"{self._where}: {WARMUP_KEY} is not a JSON list of input rows: {err}") from err
        row = {name: np.zeros(field.shape, np.float32) if field.shape else 0.0
               for name, field in self.input_fields.items()}
        return [row, dict(row)]

    def verification(self) -> Verification | None:
        return from_properties(self._properties, self._where)

    def release(self) -> None:
        self._booster = None

    def _columns(self, batch: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        return {name: np.asarray([record[name] for record in batch], dtype=self.dtype) for name in self.input_fields}

    def _matrix(self, columns: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
        """The inputs as the library takes them: one row per record, in the model's feature order."""
        if self._features is None:
            return np.ascontiguousarray(columns[TENSOR_INPUT], dtype=self.dtype).reshape(rows, self._n_features)
        x = np.empty((rows, len(self._features)), dtype=self.dtype)
        for j, name in enumerate(self._features):  # a copy per feature, not per row
            x[:, j] = columns[name]
        return x

    def _attributions(self, contributions: np.ndarray) -> Outputs:
        if self._features is None:
            return {TENSOR_INPUT: contributions.astype(np.float32)}
        return dict(zip(self._features, contributions.tolist(), strict=True))
