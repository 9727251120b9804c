"""A versioned model repository on disk: `<root>/<name>/<version>/` holds the artifact and
`metadata.json` (type, SHA-256, size, created). Versions of a name grow from 1.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
import tarfile
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from contract import scoring_pb2 as pb
from contract.model_types import ARTIFACT_FILES, artifact_file

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class StoredModel:
    name: str
    version: int
    model_type: str  # a ModelType name, e.g. "PMML"
    data_type: str
    description: str
    file: str
    sha256: str
    size_bytes: int
    created_ms: int

    @property
    def model_type_value(self) -> int:
        return pb.ModelType.Value(self.model_type)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _head(source: Path) -> bytes:
    """A file's first bytes (b"" for a directory): some artifacts are named by their content."""
    if not source.is_file():
        return b""
    with open(source, "rb") as f:
        return f.read(16)


def pack_saved_model(directory: Path, target: Path) -> None:
    if not (directory / "saved_model.pb").exists():
        raise ValueError(f"{directory} is not a SavedModel directory (no saved_model.pb)")
    with tarfile.open(target, "w:gz") as tar:
        tar.add(directory, arcname="saved_model")


class ModelRepository:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[StoredModel]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = [self._read(p) for p in folder.iterdir() if p.name.isdigit()]
        return sorted((m for m in found if m), key=lambda m: m.version)

    def get(self, name: str, version: int) -> StoredModel:
        stored = self._read(self.root / name / str(version))
        if stored is None:
            known = [m.version for m in self.versions(name)]
            raise KeyError(f"model '{name}' has no version {version} in {self.root}; it has {known}")
        return stored

    def artifact_path(self, stored: StoredModel) -> Path:
        return self.root / stored.name / str(stored.version) / stored.file

    def publish(self, name: str, source: Path, model_type: int, data_type: str,
                description: str = "") -> StoredModel:
        """Copy a model file (PMML, or a SavedModel already packed as .tar.gz) or a
        SavedModel directory in as the next version."""
        if not NAME_PATTERN.match(name):
            raise ValueError(f"model name '{name}' must match {NAME_PATTERN.pattern}")
        if model_type not in ARTIFACT_FILES:
            raise ValueError(f"cannot store model type {model_type}")
        self.root.mkdir(parents=True, exist_ok=True)
        with self._name_lock(name):
            version = max((m.version for m in self.versions(name)), default=0) + 1
            final = self.root / name / str(version)
            with tempfile.TemporaryDirectory(dir=self.root) as staging:
                artifact = Path(staging) / artifact_file(model_type, _head(Path(source)))
                if model_type == pb.TENSORFLOW_SAVED_MODEL and Path(source).is_dir():
                    pack_saved_model(Path(source), artifact)
                else:
                    shutil.copyfile(source, artifact)
                stored = StoredModel(
                    name=name, version=version, model_type=pb.ModelType.Name(model_type),
                    data_type=data_type, description=description, file=artifact.name,
                    sha256=sha256_of(artifact), size_bytes=artifact.stat().st_size,
                    created_ms=int(time.time() * 1000),
                )
                (Path(staging) / "metadata.json").write_text(json.dumps(asdict(stored), indent=1))
                final.parent.mkdir(parents=True, exist_ok=True)
                Path(staging).rename(final)  # atomic: a version appears complete or not at all
                Path(staging).mkdir()  # for TemporaryDirectory's cleanup
        return stored

    @contextmanager
    def _name_lock(self, name: str):
        with open(self.root / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @staticmethod
    def _read(folder: Path) -> StoredModel | None:
        try:
            return StoredModel(**json.loads((folder / "metadata.json").read_text()))
        except (FileNotFoundError, NotADirectoryError):
            return None
