"""A model that kills its process on one input value, as a crash in a framework's native code
would (SIGABRT, no exception to catch): the poison record of the crash-journal test and fault
case. Registered with SCORING_EXTRA_BACKENDS="98=faults.crashing_model:CrashingBackend"; its
artifact is JSON: {"crash_on": 666.0}.

    y = 2 * x, for every record whose x is not crash_on

With {"abort_on_load": true} in the artifact it kills its process as it loads instead, as a
crash in a framework's native loader would (the load-crash case of the load journal).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scoring.backends.base import InputField, LoadedModel, ModelBackend, Outputs

CRASHING_TYPE = 98
BACKEND = f"{CRASHING_TYPE}=faults.crashing_model:CrashingBackend"
CRASH_ON = 666.0  # the value the tests and the fault case send


class CrashingModel(LoadedModel):
    def __init__(self, crash_on: float) -> None:
        self.crash_on = crash_on
        self.input_fields = {"x": InputField("x", "float")}

    def predict(self, batch: Sequence[dict[str, Any]]) -> list[Outputs]:
        if any(r["x"] == self.crash_on for r in batch):
            os.abort()
        return [{"y": 2 * r["x"]} for r in batch]

    def warm_up_inputs(self) -> list[dict[str, Any]]:
        return [{"x": 1.0}]

    def release(self) -> None:
        pass


class CrashingBackend(ModelBackend):
    def load(self, artifact: Path, signature_name: str = "") -> LoadedModel:
        spec = json.loads(artifact.read_text())
        if spec.get("abort_on_load"):
            os.abort()
        return CrashingModel(float(spec["crash_on"]))
