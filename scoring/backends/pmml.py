"""PMML models through pypmml, on its JPype gateway (an in-process JVM).

pypmml's default Py4J gateway costs about 1 ms per call; JPype about 27 us. Batches go
through pypmml's DataFrame path, one JVM call per batch.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from lxml import etree

from scoring.backends.base import InputField, Kind, LoadedModel, ModelBackend, Outputs
from scoring.errors import ModelLoadError

PMML_KINDS: dict[str, Kind] = {
    "double": "float",
    "float": "float",
    "real": "float",
    "integer": "int",
    "string": "string",
}
_context_lock = threading.Lock()


def pmml_context():
    """The process-wide pypmml context on the JPype gateway, started once."""
    from pypmml import PMMLContext

    with _context_lock:
        return PMMLContext.getOrCreate(gateway="jpype")


def check_pmml_document(data: bytes, where: str) -> None:
    """Refuse anything but a plain PMML document before the JVM's parser sees it.

    PMML never needs a DTD; refusing DOCTYPE shuts out external entities (XXE) and
    entity expansion. lxml parses here with entities, DTDs and network all off."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             dtd_validation=False, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as err:
        raise ModelLoadError(f"{where} is not well-formed XML ({err}): re-export the PMML") from err
    if root.getroottree().docinfo.doctype:
        raise ModelLoadError(
            f"{where} declares a DOCTYPE, which PMML never needs; refused to rule out "
            "external entities. Re-export the model without one."
        )
    if etree.QName(root).localname != "PMML":
        raise ModelLoadError(f"{where}: root element is <{etree.QName(root).localname}>, not <PMML>")


class PmmlModel(LoadedModel):
    def __init__(self, model, where: str) -> None:
        self._model = model
        self._input_names = list(model.inputNames)
        self.input_fields = {}
        for field in model.inputFields:
            kind = PMML_KINDS.get(str(field.dataType).lower())
            if kind is None:
                raise ModelLoadError(
                    f"{where}: input field '{field.name}' has PMML data type "
                    f"'{field.dataType}', which this backend does not score"
                )
            self.input_fields[field.name] = InputField(field.name, kind)
        self._categories = {f.name: list(f.valuesAsString or []) for f in model.inputFields}

    def predict(self, batch: Sequence[dict[str, Any]]) -> list[Outputs]:
        if len(batch) == 1:
            return [_to_python(dict(self._model.predict(dict(batch[0]))))]
        frame = pd.DataFrame(list(batch), columns=self._input_names)
        result = self._model.predict(frame)
        return [_to_python(row) for row in result.to_dict(orient="records")]

    def warm_up_inputs(self) -> list[dict[str, Any]]:
        row: dict[str, Any] = {}
        for name, field in self.input_fields.items():
            categories = self._categories.get(name)
            if field.kind == "string":
                row[name] = categories[0] if categories else ""
            else:
                row[name] = 0 if field.kind == "int" else 0.0
        return [row, dict(row)]

    def release(self) -> None:
        self._model = None


def _to_python(outputs: dict) -> Outputs:
    """JPype hands back Java objects; results must be plain Python values."""
    converted = {}
    for name, value in outputs.items():
        name = str(name)
        if hasattr(value, "item"):  # numpy scalar
            value = value.item()
        if isinstance(value, bool | int | float | str | bytes) or value is None:
            converted[name] = value
        elif _is_java_number(value):
            converted[name] = float(value) if "." in str(value) or "E" in str(value) else int(value)
        else:
            converted[name] = str(value)
    return {k: (float("nan") if v is None else v) for k, v in converted.items()}


def _is_java_number(value: Any) -> bool:
    try:
        float(str(value))
        return True
    except ValueError:
        return False


class PmmlBackend(ModelBackend):
    def load(self, artifact: Path, signature_name: str = "") -> LoadedModel:
        where = f"PMML artifact {artifact.name}"
        try:
            data = artifact.read_bytes()
        except OSError as err:
            raise ModelLoadError(f"{where} cannot be read: {err}") from err
        check_pmml_document(data, where)
        pmml_context()
        from pypmml import Model

        try:
            model = Model.fromString(data.decode("utf-8"))
        except Exception as err:  # pypmml raises the JVM's exceptions
            raise ModelLoadError(f"{where} is not a PMML model pypmml can load: {err}") from err
        return PmmlModel(model, where)
