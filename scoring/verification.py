"""Verification on load: a model may carry sample inputs with the outputs it must give for
them. A model whose outputs differ beyond the tolerance is refused before it serves, saying
which sample and which output differed.

Where the samples come from:
- PMML: the model's own `<ModelVerification>` element (PMML 4.x): `VerificationFields` name
  the fields (and their `column` in the table), each output with its `precision` (relative)
  and `zeroThreshold`; the `InlineTable` holds one row per sample.
- SavedModel: `assets.extra/verification.json`:
  `{"inputs": [{...}], "expected": [{...}], "rtol": 1e-4, "atol": 1e-5}`.
- ONNX: the same JSON in the model's metadata property `scoring.verification`.
- XGBoost: the same JSON in the booster's attribute `scoring.verification`; LightGBM: in the
  model text's header line `scoring.verification=...` (scoring.backends.lightgbm).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contract.values import plain
from scoring.backends.base import InputField
from scoring.batch import score_batch
from scoring.errors import VerificationError

PMML_PRECISION, PMML_ZERO_THRESHOLD = 1e-6, 1e-16  # the PMML defaults
# The property a one-file model carries its samples' JSON in (XGBoost attributes, LightGBM header
# lines; ONNX metadata, scoring.backends.onnx.VERIFICATION_KEY).
VERIFICATION_KEY = "scoring.verification"


@dataclass(frozen=True)
class Tolerance:
    rtol: float = 1e-6
    atol: float = 0.0

    def describe(self) -> str:
        return f"rtol {self.rtol:g}, atol {self.atol:g}"


@dataclass(frozen=True)
class Verification:
    inputs: list[dict[str, Any]]
    expected: list[dict[str, Any]]
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)  # by output; default below
    default: Tolerance = Tolerance()

    def tolerance(self, output: str) -> Tolerance:
        return self.tolerances.get(output, self.default)


def verify(model, v: Verification) -> int:
    """Score the samples; raise VerificationError at the first output out of tolerance.
    Returns how many samples were checked."""
    for i, (outcome, want) in enumerate(zip(score_batch(model, v.inputs), v.expected, strict=True), 1):
        where = f"sample {i} of {len(v.inputs)}"
        if not outcome.ok:
            raise VerificationError(f"{where} could not be scored: {outcome.error}")
        for name, expected in want.items():
            if name not in outcome.outputs:
                raise VerificationError(f"{where}: the model has no output '{name}' "
                                        f"(it has {sorted(outcome.outputs)})")
            problem = difference(outcome.outputs[name], expected, v.tolerance(name))
            if problem:
                raise VerificationError(f"{where}: output '{name}' {problem}")
    return len(v.inputs)


def difference(actual: Any, expected: Any, tol: Tolerance) -> str:
    """"" when `actual` matches `expected`, else what differs."""
    if isinstance(expected, str):
        return "" if str(actual) == expected else f"is {actual!r}, expected {expected!r}"
    got, want = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if got.shape != want.shape:
        return f"has shape {list(got.shape)}, expected {list(want.shape)}"
    off = np.abs(got - want) > tol.atol + tol.rtol * np.abs(want)
    if not off.any():
        return ""
    at = np.unravel_index(int(np.argmax(off)), off.shape) if off.ndim else ()
    index = f"[{', '.join(map(str, at))}] " if at else ""
    return f"{index}is {got[at]:.6g}, expected {want[at]:.6g} ({tol.describe()})"


# ---- PMML ------------------------------------------------------------------------------------
def from_pmml(root, input_fields: Mapping[str, InputField]) -> Verification | None:
    """The top-level model's `<ModelVerification>`, or None if it has none."""
    element = next((v for model in root for v in model if _local(v) == "ModelVerification"), None)
    if element is None:
        return None
    fields = [f for group in _children(element, "VerificationFields") for f in _children(group, "VerificationField")]
    columns = {f.get("field"): f.get("column") or f.get("field") for f in fields}
    outputs = {name: column for name, column in columns.items() if name not in input_fields}
    tolerances = {f.get("field"): Tolerance(float(f.get("precision", PMML_PRECISION)),
                                            float(f.get("zeroThreshold", PMML_ZERO_THRESHOLD)))
                  for f in fields if f.get("field") in outputs}
    rows = [{_local(cell): (cell.text or "").strip() for cell in row}
            for table in _children(element, "InlineTable") for row in _children(table, "row")]
    if not rows or not outputs:
        raise VerificationError("<ModelVerification> has no rows or no expected output fields")
    inputs, expected = [], []
    for i, row in enumerate(rows, 1):
        try:
            inputs.append({name: _typed(row[column], input_fields[name].kind)
                           for name, column in columns.items() if name in input_fields})
            expected.append({name: _number_or_text(row[column]) for name, column in outputs.items()})
        except (KeyError, ValueError) as err:
            raise VerificationError(f"<ModelVerification> row {i} is not usable: {err!r}") from err
    return Verification(inputs, expected, tolerances, Tolerance(PMML_PRECISION, PMML_ZERO_THRESHOLD))


def _local(element) -> str:
    tag = element.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _children(element, name: str) -> list:
    return [c for c in element if _local(c) == name]


def _typed(text: str, kind: str) -> Any:
    if kind == "string":
        return text
    return int(text) if kind == "int" else float(text)


def _number_or_text(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


# ---- JSON (SavedModel, ONNX) -----------------------------------------------------------------
def from_json_file(path: Path) -> Verification | None:
    return from_json(path.read_text(), str(path.name)) if path.exists() else None


def from_json(text: str, where: str) -> Verification:
    """`{"inputs": [{...}], "expected": [{...}], "rtol": 1e-4, "atol": 1e-5}`; lists are tensors."""
    try:
        doc = json.loads(text)
        return Verification([with_tensors(row) for row in doc["inputs"]], list(doc["expected"]),
                            default=Tolerance(float(doc.get("rtol", 1e-4)), float(doc.get("atol", 1e-5))))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise VerificationError(f"{where} is not usable verification JSON: {err!r}") from err


def from_properties(properties: Mapping[str, str], where: str) -> Verification | None:
    """The samples a one-file model carries in its string properties, if it carries any."""
    if VERIFICATION_KEY not in properties:
        return None
    return from_json(properties[VERIFICATION_KEY], f"{where}'s {VERIFICATION_KEY}")


def with_tensors(row: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON input row as records carry it: its lists become float32 tensors."""
    return {k: np.asarray(v, dtype=np.float32) if isinstance(v, list) else v for k, v in row.items()}


def to_json(inputs: Sequence[dict], expected: Sequence[dict], rtol: float = 1e-4, atol: float = 1e-5) -> str:
    """What `from_json` reads (for model builders: `samples/build.py`)."""
    return json.dumps({"inputs": list(inputs), "expected": list(expected), "rtol": rtol, "atol": atol},
                      default=plain)

