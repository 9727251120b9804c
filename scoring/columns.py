"""A model's inputs from a batch of columns (contract.columns), checked with masks: the
columnar path's counterpart of `LoadedModel.prepare`, with the same reasons, and no Python
loop over the rows that pass.

A row fails alone: a missing input, a kind the model does not take (an int where a float is
taken is widened, as `check_input` does), a shape that does not fit, a non-finite number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contract.columns import KINDS, SHAPE
from scoring.backends.base import InputField

SUFFIX_NAMES = {"": "float", "#int": "int", "#str": "string", "#bytes": "bytes", "#tensor": "tensor"}
ACCEPTS = {"float": ("", "#int"), "int": ("#int",), "string": ("#str", "#bytes")}


@dataclass
class Checked:
    """Per field, its values over every row (a placeholder where the row failed); per row,
    why it failed (None: it passed)."""

    values: dict[str, np.ndarray]
    reasons: list[str | None]

    @property
    def passed(self) -> np.ndarray:
        return np.array([r is None for r in self.reasons], dtype=bool)


def model_inputs(batch: pa.RecordBatch, fields: Mapping[str, InputField]) -> Checked:
    n = batch.num_rows
    reasons: list[str | None] = [None] * n
    sent = {name: _kinds_sent(batch, name) for name in fields}
    _fail_missing(reasons, fields, sent)
    values = {}
    for name, field in fields.items():
        check = _tensor if field.shape else _scalar
        values[name] = check(batch, field, sent[name], reasons)
    return Checked(values, reasons)


def _kinds_sent(batch: pa.RecordBatch, name: str) -> dict[str, np.ndarray]:
    """Per kind suffix present in the batch, which rows sent the input as that kind."""
    out = {}
    for suffix, _ in KINDS.values():
        index = batch.schema.get_field_index(name + suffix)
        if index >= 0:
            out[suffix] = batch.column(index).is_valid().to_numpy(zero_copy_only=False)
    return out


def _fail_missing(reasons: list[str | None], fields: Mapping[str, InputField], sent: dict) -> None:
    n = len(reasons)
    present = {name: np.logical_or.reduce([*kinds.values(), np.zeros(n, bool)]) for name, kinds in sent.items()}
    lacking = np.logical_not(np.logical_and.reduce([*present.values(), np.ones(n, bool)]))
    for i in np.flatnonzero(lacking):
        missing = sorted(name for name in fields if not present[name][i])
        reasons[i] = f"missing input(s) {missing}; the model takes {sorted(fields)}"


def _scalar(batch: pa.RecordBatch, field: InputField, kinds: dict, reasons: list) -> np.ndarray:
    n, accepted = batch.num_rows, ACCEPTS[field.kind]
    _fail_other_kinds(batch, field, kinds, accepted, reasons)
    if field.kind == "string":
        out = np.empty(n, dtype=object)
        for suffix in accepted:
            if suffix in kinds:
                column = batch.column(field.name + suffix).to_numpy(zero_copy_only=False)
                out[kinds[suffix]] = column[kinds[suffix]]
        return out
    out = np.zeros(n, dtype=np.float64 if field.kind == "float" else np.int64)
    for suffix in accepted:
        if suffix in kinds:
            column = batch.column(field.name + suffix).fill_null(0).to_numpy(zero_copy_only=False)
            out[kinds[suffix]] = column[kinds[suffix]]
    if field.kind == "float":
        for i in np.flatnonzero(~np.isfinite(out)):
            if reasons[i] is None:
                reasons[i] = f"input '{field.name}' is {out[i]}: only finite numbers can be scored"
        out[~np.isfinite(out)] = 0.0
    return out


def _fail_other_kinds(batch: pa.RecordBatch, field: InputField, kinds: dict, accepted, reasons: list) -> None:
    for suffix, rows in kinds.items():
        if suffix in accepted:
            continue
        for i in np.flatnonzero(rows):
            if reasons[i] is None:
                reasons[i] = (f"input '{field.name}' is a {_sent_name(batch, field.name, suffix, i)}, "
                              f"the model takes a {field.describe()}")


def _sent_name(batch: pa.RecordBatch, name: str, suffix: str, row: int) -> str:
    if suffix == "#tensor":
        return f"tensor of shape {batch.column(name + SHAPE)[row].as_py()}"
    return SUFFIX_NAMES[suffix]


def _tensor(batch: pa.RecordBatch, field: InputField, kinds: dict, reasons: list) -> np.ndarray:
    """Tensors of the field's shape, stacked (rows (n, *shape)) when the shape is fixed; else
    an object array of one array per row."""
    n, where = batch.num_rows, f"input '{field.name}'"
    _fail_other_kinds(batch, field, kinds, ("#tensor",), reasons)
    rows = kinds.get("#tensor", np.zeros(n, bool))
    shapes = batch.column(field.name + SHAPE) if "#tensor" in kinds else pa.nulls(n, pa.list_(pa.int64()))
    values = batch.column(field.name + "#tensor") if "#tensor" in kinds else pa.nulls(n, pa.list_(pa.float32()))
    fits = rows & _shapes_fit(shapes, field.shape)
    for i in np.flatnonzero(rows & ~fits):
        if reasons[i] is None:
            reasons[i] = f"{where} has shape {shapes[i].as_py()}, the model takes shape {list(field.shape)}"
    finite = np.ones(n, bool)
    flat_finite = pc.is_finite(pc.list_flatten(values)).to_numpy(zero_copy_only=False)
    finite[pc.list_parent_indices(values).to_numpy(zero_copy_only=False)[~flat_finite]] = False
    for i in np.flatnonzero(fits & ~finite):
        if reasons[i] is None:
            reasons[i] = f"{where} holds NaN or infinite values"
    return _stacked(values, shapes, fits, field.shape)


def _shapes_fit(shapes: pa.Array, want: tuple[int | None, ...]) -> np.ndarray:
    n = len(shapes)
    ndims = pc.list_value_length(shapes).fill_null(-1).to_numpy(zero_copy_only=False)
    fits = ndims == len(want)
    if not fits.any():
        return fits
    dims = pc.list_flatten(shapes.filter(pa.array(fits))).to_numpy(zero_copy_only=False).reshape(-1, len(want))
    ok = np.ones(len(dims), bool)
    for axis, size in enumerate(want):
        if size is not None:
            ok &= dims[:, axis] == size
    out = np.zeros(n, bool)
    out[np.flatnonzero(fits)] = ok
    return out


def _stacked(values: pa.Array, shapes: pa.Array, fits: np.ndarray, want: tuple[int | None, ...]) -> np.ndarray:
    n = len(values)
    if None not in want:
        out = np.zeros((n, *want), dtype=np.float32)
        if fits.any():
            flat = pc.list_flatten(values.filter(pa.array(fits))).to_numpy(zero_copy_only=False)
            out[fits] = flat.astype(np.float32).reshape(-1, *want)
        return out
    out = np.empty(n, dtype=object)
    for i in np.flatnonzero(fits):  # ragged shapes: one array per row, as today
        out[i] = np.asarray(values[i].as_py(), dtype=np.float32).reshape(shapes[i].as_py())
    return out
