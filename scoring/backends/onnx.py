"""ONNX models, run by ONNX Runtime on the CPU.

The artifact is one `.onnx` file. Record inputs map to the graph's inputs by name; each
record is one row of the batch (the graph's first dimension). An input of shape [N] or
[N, 1] takes a number or a string per record, a larger one a tensor of the remaining shape.
Outputs are the graph's, row by row; a scikit-learn classifier's probabilities exported with
ZipMap (a list of {class: probability}) become one output per class, `<output>_<class>`.

Warm-up inputs and verification samples may ride in the model's metadata properties,
`scoring.warmup_inputs` (a JSON list of input rows) and `scoring.verification` (the JSON of
`scoring.verification.from_json`): the artifact stays one file.

A streaming worker shares its cores with Flink and with the other data types' models, so a
session runs its graph on one thread by default (`SCORING_ONNX_THREADS` raises that).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scoring.backends.base import InputField, Kind, LoadedModel, ModelBackend, Outputs, UnsafeOp
from scoring.errors import ModelLoadError
from scoring.verification import Verification, from_json, with_tensors

WARMUP_KEY = "scoring.warmup_inputs"
VERIFICATION_KEY = "scoring.verification"

# ONNX tensor element types this backend feeds, with the numpy dtype and the record kind.
FED: dict[str, tuple[Any, Kind]] = {
    "tensor(float)": (np.float32, "float"),
    "tensor(double)": (np.float64, "float"),
    "tensor(float16)": (np.float16, "float"),
    "tensor(int64)": (np.int64, "int"),
    "tensor(int32)": (np.int32, "int"),
    "tensor(int16)": (np.int16, "int"),
    "tensor(int8)": (np.int8, "int"),
    "tensor(uint8)": (np.uint8, "int"),
    "tensor(string)": (object, "string"),
}


def session_options():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("SCORING_ONNX_THREADS", "1"))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings would flood the TaskManager log
    return options


class OnnxInput:
    """One graph input: its record field, and how a batch column is shaped for it."""

    def __init__(self, node, where: str) -> None:
        if node.type not in FED:
            raise ModelLoadError(f"{where}: input '{node.name}' has type {node.type}, which this backend "
                                 f"does not feed (it feeds {', '.join(sorted(FED))})")
        if not node.shape:
            raise ModelLoadError(f"{where}: input '{node.name}' is a scalar: the graph's inputs must "
                                 "have a batch dimension first")
        self.name = node.name
        self.dtype, kind = FED[node.type]
        rest = tuple(d if isinstance(d, int) and d > 0 else None for d in node.shape[1:])
        self.column = rest == (1,)  # [N, 1]: one value per record, fed as a column
        self.field = InputField(node.name, kind, () if rest in ((), (1,)) else rest)

    def feed(self, values: Sequence[Any]) -> np.ndarray:
        if self.field.kind == "string":
            array = np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
        else:
            array = np.asarray(values, dtype=self.dtype)
        return array.reshape(-1, 1) if self.column else array


class OnnxModel(LoadedModel):
    def __init__(self, session, where: str) -> None:
        self._session = session
        self._inputs = [OnnxInput(node, where) for node in session.get_inputs()]
        self.input_fields = {i.name: i.field for i in self._inputs}
        self._outputs = [node.name for node in session.get_outputs()]
        self._meta = session.get_modelmeta().custom_metadata_map
        self._where = where

    def predict(self, batch: Sequence[dict[str, Any]]) -> list[Outputs]:
        values = self._run({i.name: [record[i.name] for record in batch] for i in self._inputs}, len(batch))
        rows: list[Outputs] = [{} for _ in batch]
        for name, value in zip(self._outputs, values, strict=True):
            for row, item in zip(rows, value, strict=True):
                row.update(_row_outputs(name, item))
        return rows

    def predict_columns(self, columns: Mapping[str, np.ndarray], rows: int) -> dict[str, Sequence[Any]]:
        out: dict[str, Sequence[Any]] = {}
        for name, value in zip(self._outputs, self._run(columns, rows), strict=True):
            if rows and isinstance(value[0], dict):  # ZipMap: a column per class
                out.update({f"{name}_{label}": np.array([float(m[label]) for m in value]) for label in value[0]})
            elif isinstance(value, np.ndarray) and value.dtype.kind in "SO":
                out[name] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
            else:
                out[name] = value
        return out

    def _run(self, columns: Mapping[str, Sequence[Any]], rows: int) -> list[Any]:
        values = self._session.run(self._outputs, {i.name: i.feed(columns[i.name]) for i in self._inputs})
        for name, value in zip(self._outputs, values, strict=True):
            if len(value) != rows:
                raise ValueError(f"output '{name}' has {len(value)} rows for a batch of {rows}")
        return values

    def warm_up_inputs(self) -> list[dict[str, Any]]:
        if WARMUP_KEY in self._meta:
            return [with_tensors(row) for row in self._metadata_json(WARMUP_KEY)]
        row: dict[str, Any] = {}
        for field in self.input_fields.values():
            if field.shape:
                row[field.name] = np.zeros([d or 1 for d in field.shape], dtype=np.float32)
            else:
                row[field.name] = {"string": "", "int": 0, "float": 0.0}[field.kind]
        return [row, dict(row)]

    def verification(self) -> Verification | None:
        if VERIFICATION_KEY not in self._meta:
            return None
        return from_json(self._meta[VERIFICATION_KEY], f"{self._where}'s {VERIFICATION_KEY}")

    def release(self) -> None:
        self._session = None

    def _metadata_json(self, key: str) -> Any:
        try:
            return json.loads(self._meta[key])
        except ValueError as err:
            raise ModelLoadError(f"{self._where}: metadata property {key} is not JSON: {err}") from err


def _row_outputs(name: str, item: Any) -> Outputs:
    if isinstance(item, dict):  # ZipMap: {class: probability}
        return {f"{name}_{label}": float(p) for label, p in item.items()}
    if isinstance(item, np.ndarray) and item.ndim:
        return {name: item}
    value = item.item() if hasattr(item, "item") else item
    return {name: value.decode("utf-8", "replace") if isinstance(value, bytes) else value}


class OnnxBackend(ModelBackend):
    def unsafe_ops(self, artifact: Path, allowed: frozenset[str]) -> list[UnsafeOp]:
        """None: ONNX Runtime runs only its own kernels. But a tensor stored as external data
        would be read from a file the descriptor's bytes do not cover (and the location could
        be any path): such a model is refused, not admitted by a flag."""
        import onnx
        from onnx.external_data_helper import _get_all_tensors, uses_external_data

        where = f"ONNX model {artifact.name}"
        try:
            model = onnx.load(str(artifact), load_external_data=False)
        except Exception as err:  # noqa: BLE001 - onnx raises DecodeError, ValueError...
            raise ModelLoadError(f"{where} cannot be read as an ONNX model: {err}") from err
        external = [t for t in _get_all_tensors(model) if uses_external_data(t)]
        if external:
            location = next((e.value for e in external[0].external_data if e.key == "location"), "?")
            raise ModelLoadError(
                f"{where} keeps {len(external)} tensor(s) as external data (the first, "
                f"'{external[0].name}', in the file {location!r}): the artifact must be one self-contained "
                ".onnx file. Save it with onnx.save(model, path, save_as_external_data=False)")
        return []

    def load(self, artifact: Path, signature_name: str = "") -> LoadedModel:
        import onnxruntime as ort

        where = f"ONNX model {artifact.name}"
        try:
            session = ort.InferenceSession(str(artifact), sess_options=session_options(),
                                           providers=["CPUExecutionProvider"])
        except Exception as err:  # ONNX Runtime raises its own exception types for bad graphs
            raise ModelLoadError(f"{where} cannot be loaded by ONNX Runtime: {err}") from err
        return OnnxModel(session, where)
