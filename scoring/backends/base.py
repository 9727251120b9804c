"""The one interface every model backend implements, and the input checks they share.

A backend turns a local artifact into a `LoadedModel`; a loaded model checks and
converts one record's inputs (`prepare`), scores a batch of prepared records in one
framework call (`predict`), offers warm-up inputs, and releases what it holds. The
framework-agnostic machinery (isolating bad records, output checks, warm-up) lives in
`scoring.batch`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from contract.values import PyValue
from scoring.errors import InputTypeError, MissingInputError

if TYPE_CHECKING:
    from scoring.verification import Verification

Kind = Literal["float", "int", "string"]
Outputs = dict[str, Any]


@dataclass(frozen=True)
class InputField:
    """What a model expects of one named input, per record."""

    name: str
    kind: Kind
    shape: tuple[int | None, ...] = ()  # () is a scalar; None is any size

    def describe(self) -> str:
        return f"{self.kind}" + (f" tensor of shape {list(self.shape)}" if self.shape else "")


@dataclass(frozen=True)
class UnsafeOp:
    """An op a model may not use (not known to be safe, or reaching the file system or a
    process), where it is, and why."""

    op: str  # the name --allow-model-ops takes
    node: str
    where: str  # "the graph", or "function <name>"
    detail: str = ""
    admissible: bool = True  # whether --allow-model-ops can admit it

    def describe(self) -> str:
        return f"{self.op} (node '{self.node}' in {self.where}{', ' + self.detail if self.detail else ''})"


class LoadedModel(ABC):
    """A model ready to score. Not thread-safe: one scoring thread calls it."""

    input_fields: Mapping[str, InputField]

    def prepare(self, inputs: Mapping[str, PyValue]) -> dict[str, Any]:
        """Check one record's inputs against the model's fields; convert them."""
        missing = [n for n in self.input_fields if n not in inputs]
        if missing:
            raise MissingInputError(
                f"missing input(s) {sorted(missing)}; the model takes "
                f"{sorted(self.input_fields)}"
            )
        return {name: check_input(field, inputs[name]) for name, field in self.input_fields.items()}

    @abstractmethod
    def predict(self, batch: Sequence[dict[str, Any]]) -> list[Outputs]:
        """Score prepared records in one call; one outputs dict per record."""

    def predict_columns(self, columns: Mapping[str, np.ndarray], rows: int) -> dict[str, Sequence[Any]]:
        """Score `rows` prepared records given as one array per input (scoring.columns), in one
        call; per output, its `rows` values. This default goes through `predict`; a backend
        that takes arrays overrides it."""
        records = [{name: column[i] for name, column in columns.items()} for i in range(rows)]
        outputs = self.predict(records)
        return {name: [row[name] for row in outputs] for name in (outputs[0] if outputs else {})}

    def explains(self) -> bool:
        """Whether the model carries an explanation of its predictions (`explain`)."""
        return False

    def explain(self, batch: Sequence[dict[str, Any]]) -> list[Outputs]:
        """Explain prepared records in one call: per record, outputs named after the inputs
        they attribute (e.g. a heatmap over an image input) and any others the model gives."""
        raise NotImplementedError(f"{type(self).__name__} has no explanation")

    @abstractmethod
    def warm_up_inputs(self) -> list[dict[str, PyValue]]:
        """Inputs to score before the model is declared ready."""

    def verification(self) -> Verification | None:
        """Sample inputs with the outputs the model must give for them, if it ships any."""
        return None

    @abstractmethod
    def release(self) -> None:
        """Drop what the model holds, so its memory can be reclaimed."""


class ModelBackend(ABC):
    """Loads artifacts of one model type."""

    @abstractmethod
    def load(self, artifact: Path, signature_name: str = "") -> LoadedModel:
        """Load a local artifact; raise ModelLoadError with a clear reason if it cannot."""

    def unsafe_ops(self, artifact: Path, allowed: frozenset[str]) -> list[UnsafeOp]:
        """What in the artifact could reach the file system or start a process, but for
        `allowed`; checked before `load`, so none of it runs."""
        return []


def check_input(field: InputField, value: PyValue) -> Any:
    if field.shape:
        return _check_tensor(field, value, f"input '{field.name}'")
    if field.kind == "string":
        if isinstance(value, str | bytes):
            return value
    elif field.kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InputTypeError(f"input '{field.name}' is {value}: only finite numbers can be scored")
        return float(value)
    raise InputTypeError(
        f"input '{field.name}' is a {_type_name(value)}, the model takes a {field.describe()}"
    )


def _check_tensor(field: InputField, value: PyValue, where: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise InputTypeError(f"{where} is a {_type_name(value)}, the model takes a {field.describe()}")
    fits = value.ndim == len(field.shape) and all(
        want is None or want == got for want, got in zip(field.shape, value.shape, strict=True)
    )
    if not fits:
        raise InputTypeError(
            f"{where} has shape {list(value.shape)}, the model takes shape {list(field.shape)}"
        )
    if not np.isfinite(value).all():
        raise InputTypeError(f"{where} holds NaN or infinite values")
    return value


def _type_name(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"tensor of shape {list(value.shape)}"
    return {float: "float", int: "int", str: "string", bytes: "bytes"}.get(type(value), type(value).__name__)
