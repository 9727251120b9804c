"""TensorFlow SavedModels, called through one signature (default `serving_default`).

The artifact is a SavedModel directory packed as .tar.gz. Record inputs map to the
signature's input tensors by name; each record contributes one row of the batch.
Models that carry their pre-processing in the graph (raw text, base64 JPEG) take
string inputs. Warm-up inputs may ship in `assets.extra/warmup_inputs.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_store.fetcher import partial_path
from scoring.backends import graph_check
from scoring.backends.base import InputField, Kind, LoadedModel, ModelBackend, Outputs, UnsafeOp
from scoring.errors import ModelLoadError
from scoring.verification import Verification, from_json_file, with_tensors

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_SIGNATURE = "serving_default"
EXPLAIN_SIGNATURE = "explain"  # optional: the model's own explanation, on the same inputs
WARMUP_FILE = Path("assets.extra") / "warmup_inputs.json"
VERIFICATION_FILE = Path("assets.extra") / "verification.json"


def _kind(dtype) -> Kind | None:
    if dtype.is_floating:
        return "float"
    if dtype.is_integer:
        return "int"
    if dtype.name == "string":
        return "string"
    return None


MAX_ENTRIES = 10_000
MAX_UNPACKED_BYTES = 8 * 1024**3


def unpack(artifact: Path, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_UNPACKED_BYTES) -> Path:
    """Extract a .tar.gz SavedModel next to the artifact (in the cache, named by its verified
    SHA-256); return the SavedModel dir. An archive of more entries or bytes than the limits
    is refused before anything is written."""
    target = artifact.with_name(artifact.name + ".d")
    if not target.exists():
        partial = partial_path(target)  # other subtasks may unpack the same artifact at once
        try:
            with tarfile.open(artifact, "r:gz") as tar:
                members = bounded_members(tar, artifact.name, max_entries, max_bytes)
                # The "data" filter refuses absolute paths, links out of the tree, devices.
                tar.extractall(partial, members=members, filter="data")
            partial.rename(target)
        except (tarfile.TarError, OSError, EOFError) as err:
            if not target.exists():  # not just another subtask that finished first
                raise ModelLoadError(
                    f"TensorFlow artifact {artifact.name} is not a readable .tar.gz of a "
                    f"SavedModel: {err}"
                ) from err
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    found = sorted(p.parent for p in target.rglob("saved_model.pb"))
    if not found:
        raise ModelLoadError(f"TensorFlow artifact {artifact.name} holds no saved_model.pb")
    return found[0]


def bounded_members(tar: tarfile.TarFile, name: str, max_entries: int, max_bytes: int) -> list[tarfile.TarInfo]:
    """The archive's entries, read header by header, refused at the first past a limit."""
    members, total = [], 0
    for member in tar:
        members.append(member)
        total += member.size
        if len(members) > max_entries or total > max_bytes:
            raise ModelLoadError(
                f"TensorFlow artifact {name} unpacks to more than {max_entries} entries or "
                f"{max_bytes} bytes: refused before unpacking (an archive bomb, or not a SavedModel)")
    return members


class TensorFlowModel(LoadedModel):
    def __init__(self, loaded, signature, directory: Path, where: str, explainer=None) -> None:
        self._loaded = loaded
        self._signature = signature
        self._explainer = explainer
        self._directory = directory
        self._dtypes = {}
        self.input_fields = {}
        for name, spec in signature.structured_input_signature[1].items():
            kind = _kind(spec.dtype)
            if kind is None:
                raise ModelLoadError(f"{where}: input '{name}' has dtype {spec.dtype.name}, "
                                     "which this backend does not feed")
            per_record = tuple(spec.shape.as_list()[1:]) if spec.shape.rank else ()
            self.input_fields[name] = InputField(name, kind, per_record)
            self._dtypes[name] = spec.dtype.as_numpy_dtype
        if explainer is not None:
            wanted = set(explainer.structured_input_signature[1])
            if not wanted <= set(self.input_fields):
                raise ModelLoadError(f"{where}: the '{EXPLAIN_SIGNATURE}' signature takes {sorted(wanted)}, "
                                     f"the scoring signature only {sorted(self.input_fields)}")

    def predict(self, batch: Sequence[dict[str, Any]]) -> list[Outputs]:
        return self._run(self._signature, batch)

    def explains(self) -> bool:
        return self._explainer is not None

    def explain(self, batch: Sequence[dict[str, Any]]) -> list[Outputs]:
        if self._explainer is None:
            return super().explain(batch)
        return self._run(self._explainer, batch)

    def predict_columns(self, columns: Mapping[str, np.ndarray], rows: int) -> dict[str, Sequence[Any]]:
        outputs = self._run_columns(self._signature, columns)
        return {name: _column_values(values) for name, values in outputs.items()}

    def _run(self, signature, batch: Sequence[dict[str, Any]]) -> list[Outputs]:
        columns = {name: [record[name] for record in batch] for name in signature.structured_input_signature[1]}
        outputs = self._run_columns(signature, columns)
        return [
            {name: _row_value(values[i]) for name, values in outputs.items()}
            for i in range(len(batch))
        ]

    def _run_columns(self, signature, columns: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        feed = {name: tf.constant(self._feed(name, columns[name])) for name in signature.structured_input_signature[1]}
        return {k: v.numpy() for k, v in signature(**feed).items()}

    def _feed(self, name: str, values: Sequence[Any]) -> np.ndarray:
        if self.input_fields[name].kind == "string":
            return np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=object)
        return np.asarray(values, dtype=self._dtypes[name])

    def warm_up_inputs(self) -> list[dict[str, Any]]:
        shipped = self._directory / WARMUP_FILE
        if shipped.exists():
            return [with_tensors(row) for row in json.loads(shipped.read_text())]
        row = {}
        for name, field in self.input_fields.items():
            if field.kind == "string":
                row[name] = ""
            elif field.shape:
                row[name] = np.zeros([d or 1 for d in field.shape], dtype=np.float32)
            else:
                row[name] = 0 if field.kind == "int" else 0.0
        return [row, dict(row)]

    def verification(self) -> Verification | None:
        return from_json_file(self._directory / VERIFICATION_FILE)

    def release(self) -> None:
        self._signature = None
        self._explainer = None
        self._loaded = None


def _column_values(values: np.ndarray) -> Sequence[Any]:
    """An output column as the rows' values: strings decoded as _row_value does."""
    if values.dtype.kind in "SO":
        return [_row_value(v) for v in values]
    return values


def _row_value(value):
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value.item() if hasattr(value, "item") else value


class TensorFlowBackend(ModelBackend):
    def unsafe_ops(self, artifact: Path, allowed: frozenset[str]) -> list[UnsafeOp]:
        from google.protobuf.message import DecodeError

        graph = (unpack(artifact) / "saved_model.pb").read_bytes()
        try:
            return graph_check.unsafe_ops(graph, allowed)
        except DecodeError as err:
            raise ModelLoadError(f"SavedModel {artifact.name} cannot be loaded by TensorFlow: its "
                                 f"saved_model.pb does not parse ({err})") from err

    def load(self, artifact: Path, signature_name: str = "") -> LoadedModel:
        import tensorflow as tf

        name = signature_name or DEFAULT_SIGNATURE
        where = f"SavedModel {artifact.name}"
        directory = unpack(artifact)
        try:
            loaded = tf.saved_model.load(str(directory))
        except Exception as err:  # TF raises many types for corrupt models
            raise ModelLoadError(f"{where} cannot be loaded by TensorFlow: {err}") from err
        signatures = getattr(loaded, "signatures", {})
        if name not in signatures:
            raise ModelLoadError(
                f"{where} has no signature '{name}'; it has {sorted(signatures)}. "
                "Set signature_name in the descriptor."
            )
        return TensorFlowModel(loaded, signatures[name], directory, where, signatures.get(EXPLAIN_SIGNATURE))
