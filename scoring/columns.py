"""A batch of columns (contract.columns) scored: its rows checked against the model's inputs
with masks (the counterpart of `LoadedModel.prepare`, with the same reasons, and no Python
loop over the rows that pass), then one `predict_columns` call (scoring.batch's rules).

A row fails alone: a missing input, a kind the model does not take (an int where a float is
taken is widened, as `check_input` does), a shape that does not fit, a non-finite number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contract.columns import KINDS, SHAPE
from scoring.backends.base import InputField, LoadedModel
from scoring.batch import non_finite

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
    names = batch.schema.names
    for suffix, _ in KINDS.values():
        if name + suffix in names:
            column = batch.column(name + suffix)
            out[suffix] = (np.ones(len(column), bool) if column.null_count == 0
                           else column.is_valid().to_numpy(zero_copy_only=False))
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
    dtype = np.float64 if field.kind == "float" else np.int64
    only = [suffix for suffix in accepted if suffix in kinds]
    if len(only) == 1 and batch.column(field.name + only[0]).null_count == 0:  # the usual batch: no copy
        out = batch.column(field.name + only[0]).to_numpy().astype(dtype, copy=False)
        return _finite(out, field, reasons) if field.kind == "float" else out
    out = np.zeros(n, dtype=dtype)
    for suffix in accepted:
        if suffix in kinds:
            column = batch.column(field.name + suffix).fill_null(0).to_numpy(zero_copy_only=False)
            out[kinds[suffix]] = column[kinds[suffix]]
    return _finite(out, field, reasons) if field.kind == "float" else out


def _finite(out: np.ndarray, field: InputField, reasons: list) -> np.ndarray:
    bad = ~np.isfinite(out)
    if not bad.any():
        return out
    for i in np.flatnonzero(bad):
        if reasons[i] is None:
            reasons[i] = f"input '{field.name}' is {out[i]}: only finite numbers can be scored"
    out = out.copy()
    out[bad] = 0.0
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


@dataclass
class Scored:
    """Per row: why it failed and at which stage (None, "": scored); per output, the rows'
    values, an array where the model gave one (a failed row's value there is meaningless)
    or a list (None for a failed row)."""

    reasons: list[str | None]
    stages: list[str]
    outputs: dict[str, list]


def score_columns(model: LoadedModel, batch: pa.RecordBatch) -> Scored:
    """The batch checked, then scored in one model call (scoring.batch's rules: rows that make
    the model throw are isolated by halving, non-finite outputs fail their row)."""
    checked = model_inputs(batch, model.input_fields)
    stages = ["validate" if r else "" for r in checked.reasons]
    scored = Scored(checked.reasons, stages, {})
    _predict_isolating(model, checked.values, np.flatnonzero(checked.passed), scored)
    return scored


def _predict_isolating(model: LoadedModel, values: dict[str, np.ndarray], rows: np.ndarray, scored: Scored) -> None:
    if not rows.size:
        return
    try:
        outputs = model.predict_columns({name: column[rows] for name, column in values.items()}, len(rows))
        _check_lengths(outputs, len(rows))
    except Exception as err:  # noqa: BLE001 - the framework's own errors: any type
        if rows.size == 1:
            _fail(scored, rows, f"the model threw: {err}")
            return
        middle = rows.size // 2
        _predict_isolating(model, values, rows[:middle], scored)
        _predict_isolating(model, values, rows[middle:], scored)
        return
    bad = _non_finite_rows(outputs, len(rows))
    for name, column in outputs.items():
        _scatter(scored, name, column, rows)
    for position, names in bad.items():
        _fail(scored, rows[position:position + 1], f"the model returned non-finite output(s) {names}")


def _scatter(scored: Scored, name: str, column: Sequence[Any], rows: np.ndarray) -> None:
    """The rows' values into the output's column over the whole batch: an array stays one
    (what a failed row holds there is never read), anything else becomes a list."""
    n = len(scored.reasons)
    target = scored.outputs.get(name)
    if isinstance(column, np.ndarray) and column.dtype.kind in "fiub":
        if target is None and len(rows) == n:
            scored.outputs[name] = column
            return
        if target is None or isinstance(target, np.ndarray) and target.shape[1:] == column.shape[1:]:
            if target is None:
                target = scored.outputs[name] = np.zeros((n, *column.shape[1:]), column.dtype)
            target[rows] = column
            return
    if not isinstance(target, list):
        target = scored.outputs[name] = [None] * n if target is None else list(target)
    for row, value in zip(rows.tolist(), column, strict=True):
        target[row] = value


def _check_lengths(outputs: dict[str, Sequence[Any]], rows: int) -> None:
    for name, column in outputs.items():
        if len(column) != rows:
            raise ValueError(f"output '{name}' has {len(column)} rows for a batch of {rows}")


def _non_finite_rows(outputs: dict[str, Sequence[Any]], rows: int) -> dict[int, list[str]]:
    """Positions of the rows with a non-finite output, and which outputs (sorted)."""
    bad: dict[int, list[str]] = {}
    for name in sorted(outputs):
        column = outputs[name]
        if isinstance(column, np.ndarray) and column.dtype.kind == "f":
            finite = np.isfinite(column.reshape(rows, -1)).all(axis=1) if rows else np.ones(0, bool)
        else:
            finite = np.array([not non_finite(v) for v in column], dtype=bool)
        for position in np.flatnonzero(~finite):
            bad.setdefault(int(position), []).append(name)
    return bad


def _fail(scored: Scored, rows: np.ndarray, reason: str) -> None:
    for row in rows.tolist():
        scored.reasons[row], scored.stages[row] = reason, "score"
        for column in scored.outputs.values():
            if isinstance(column, list):
                column[row] = None
