"""Which backend loads which model type. A new type is one module plus one line here."""

from __future__ import annotations

import importlib
import os

from contract import scoring_pb2 as pb
from scoring.backends.base import ModelBackend
from scoring.errors import UnknownModelTypeError

# Imported on first use, so a job that serves only PMML never imports TensorFlow.
BACKENDS: dict[int, str] = {
    pb.PMML: "scoring.backends.pmml:PmmlBackend",
    pb.TENSORFLOW_SAVED_MODEL: "scoring.backends.tensorflow:TensorFlowBackend",
    pb.ONNX: "scoring.backends.onnx:OnnxBackend",
    pb.XGBOOST: "scoring.backends.xgboost:XGBoostBackend",
    pb.LIGHTGBM: "scoring.backends.lightgbm:LightGBMBackend",
}

# More backends without touching this file: SCORING_EXTRA_BACKENDS="99=pkg.module:Class,...".
for _item in filter(None, os.environ.get("SCORING_EXTRA_BACKENDS", "").split(",")):
    _type, _path = _item.split("=", 1)
    BACKENDS[int(_type)] = _path.strip()

_instances: dict[int, ModelBackend] = {}


def backend_for(model_type: int) -> ModelBackend:
    if model_type not in BACKENDS:
        name = pb.ModelType.Name(model_type) if model_type in pb.ModelType.values() else model_type
        raise UnknownModelTypeError(
            f"no backend for model type {name}; known types: "
            f"{sorted(pb.ModelType.Name(t) for t in BACKENDS)}"
        )
    if model_type not in _instances:
        module, cls = BACKENDS[model_type].split(":")
        _instances[model_type] = getattr(importlib.import_module(module), cls)()
    return _instances[model_type]
