"""XGBoost models (the CPU-only xgboost-cpu package).

The artifact is one file in one of XGBoost's own formats, JSON or UBJSON
(`booster.save_model("model.json")` or `"model.ubj"`), told apart by its content, never by its
name. Anything else is refused before XGBoost reads a byte: a pickle or a joblib file (which
runs code when loaded), XGBoost's deprecated binary format, or any other file.

Inputs, outputs and the explanation: scoring.backends.gbdt. `binary:logistic` is a binary
classifier, `multi:softprob` and `multi:softmax` multiclass ones (softmax is scored as its
softprob twin, the same trees: it alone gives only the class); any other objective gives
`prediction`, the booster's own output.

Warm-up inputs and verification samples ride as the booster's attributes, which its model
file keeps: `booster.set_attr(**{"scoring.verification": ...})` before `save_model`.

A call runs on one thread unless SCORING_XGBOOST_THREADS says otherwise.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from contract.model_types import xgboost_encoding
from scoring.backends.base import LoadedModel, ModelBackend
from scoring.backends.gbdt import TreeModel, python_serialized, refused, threads
from scoring.errors import ModelLoadError

THREADS_VARIABLE = "SCORING_XGBOOST_THREADS"
BINARY = {"binary:logistic"}
MULTICLASS = {"multi:softprob", "multi:softmax"}
SAVE = "booster.save_model('model.json') (or 'model.ubj')"


class XGBoostModel(TreeModel):
    def __init__(self, booster: Any, where: str) -> None:
        learner = json.loads(booster.save_config())["learner"]
        objective = learner["objective"]["name"]
        params = learner["learner_model_param"]
        task = "binary" if objective in BINARY else "multiclass" if objective in MULTICLASS else "other"
        if objective == "multi:softmax":
            booster.set_param({"objective": "multi:softprob"})
        outputs = max(int(params.get("num_class", "0")), int(params.get("num_target", "1")), 1)
        super().__init__(booster, where, booster.feature_names, booster.num_features(), task, outputs,
                         booster.attributes())

    def _margin(self, x: np.ndarray) -> np.ndarray:
        return self._booster.inplace_predict(x, predict_type="margin")

    def _value(self, x: np.ndarray) -> np.ndarray:
        return self._booster.inplace_predict(x)

    def _contributions(self, x: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        data = xgb.DMatrix(x, feature_names=self._features, nthread=threads(THREADS_VARIABLE))
        return self._booster.predict(data, pred_contribs=True)


# UBJSON's fixed-size values and its integer types (big-endian), as XGBoost writes them.
_FIXED = {b"i": 1, b"U": 1, b"I": 2, b"l": 4, b"L": 8, b"d": 4, b"D": 8, b"C": 1, b"T": 0, b"F": 0, b"Z": 0}
_INTEGERS = {b"i": ">b", b"U": ">B", b"I": ">h", b"l": ">i", b"L": ">q"}
MAX_DEPTH = 64


class UbjsonWalk:
    """Walks a UBJSON document checking every length against its end, building nothing: XGBoost's
    own UBJSON reader trusts them, and a corrupt one crashed or hung the process in a fuzz test
    (its JSON reader raised every time)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def check(self) -> None:
        self._value(self._take(1), 0)
        if self.at != len(self.data):
            raise ValueError(f"{len(self.data) - self.at} bytes follow the document")

    def _take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ValueError(f"{n} bytes wanted at byte {self.at}, past the end ({len(self.data)} bytes)")
        self.at += n
        return self.data[self.at - n:self.at]

    def _length(self, marker: bytes | None = None) -> int:
        marker = marker or self._take(1)
        if marker not in _INTEGERS:
            raise ValueError(f"a length of type {marker!r} at byte {self.at - 1}")
        n = struct.unpack(_INTEGERS[marker], self._take(_FIXED[marker]))[0]
        if n < 0:
            raise ValueError(f"a negative length at byte {self.at}")
        return n

    def _value(self, marker: bytes, depth: int) -> None:
        if marker in _FIXED:
            self._take(_FIXED[marker])
        elif marker in (b"S", b"H"):
            self._take(self._length())
        elif marker in (b"[", b"{") and depth < MAX_DEPTH:
            self._container(marker, depth + 1)
        else:
            raise ValueError(f"marker {marker!r} at byte {self.at - 1} (depth {depth})")

    def _container(self, opening: bytes, depth: int) -> None:
        closing = b"]" if opening == b"[" else b"}"
        typed = count = None
        if self._next() == b"$":  # typed: "$" type "#" count
            typed = self._take(2)[1:]
            if self._take(1) != b"#":
                raise ValueError(f"a typed container without a count at byte {self.at - 1}")
            count = self._length()
        elif self._next() == b"#":
            self._take(1)
            count = self._length()
        if opening == b"[" and typed in _FIXED and count is not None:
            self._take(count * _FIXED[typed])  # a typed array of numbers: skipped at once
            return
        while count is None or count > 0:
            if count is None and self._next() == closing:
                self._take(1)
                return
            if opening == b"{":
                self._take(self._length())  # the key
            self._value(typed or self._take(1), depth)
            count = None if count is None else count - 1

    def _next(self) -> bytes:
        return self.data[self.at:self.at + 1]


def legacy_binary(data: bytes) -> bool:
    """XGBoost's deprecated binary format (no marker of its own): an optional "binf", a 136-byte
    parameter struct, then the objective's name with its length as a uint64 (learner.cc)."""
    body = data[4:] if data.startswith(b"binf") else data
    size = int.from_bytes(body[136:144], "little") if len(body) >= 144 else 0
    return 0 < size < 64 and re.fullmatch(rb"[a-z]+:[a-z_]+", body[144:144 + size]) is not None


def what_it_is(data: bytes) -> str:
    if legacy_binary(data):
        return "in XGBoost's deprecated binary format, which XGBoost 3 no longer reads"
    return python_serialized(data) or f"neither XGBoost JSON nor UBJSON (it starts with {data[:8]!r})"


def library_reason(err: Exception) -> str:
    """XGBoost's message without its timestamp, source location and C++ stack trace."""
    text = str(err).split("Stack trace:")[0].strip()
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", text)


class XGBoostBackend(ModelBackend):
    def load(self, artifact: Path, signature_name: str = "") -> LoadedModel:
        import xgboost as xgb

        where = f"XGBoost model {artifact.name}"
        data = artifact.read_bytes()
        encoding = xgboost_encoding(data[:16])
        if encoding is None:
            raise refused(where, what_it_is(data), SAVE)
        if encoding == "ubj":
            try:
                UbjsonWalk(data).check()
            except ValueError as err:
                raise ModelLoadError(f"{where} is not well-formed UBJSON, refused before XGBoost reads it: {err}") from err
        try:
            booster = xgb.Booster(model_file=bytearray(data))
            booster.set_param({"nthread": threads(THREADS_VARIABLE)})
            return XGBoostModel(booster, where)
        except Exception as err:  # noqa: BLE001 - XGBoostError, or a config it does not describe
            raise ModelLoadError(f"{where} cannot be loaded by XGBoost: {library_reason(err)}") from err
