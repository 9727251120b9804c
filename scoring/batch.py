"""Scoring a batch of records with any backend: one bad record never fails its neighbours.

Records whose inputs do not fit the model fail alone at `prepare`. The rest go to the
framework in one call; if that call throws, the batch is split in halves until the
records that make the model throw are isolated (a few extra calls, not one per record).
Non-finite outputs fail their record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from contract.values import PyValue
from scoring.backends.base import LoadedModel, Outputs
from scoring.errors import PredictionError, RecordError, WarmUpError


@dataclass(frozen=True)
class Outcome:
    outputs: Outputs | None = None
    error: RecordError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def score_batch(model: LoadedModel, batch: Sequence[Mapping[str, PyValue]]) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(batch)
    prepared: list[tuple[int, dict[str, Any]]] = []
    for i, inputs in enumerate(batch):
        try:
            prepared.append((i, model.prepare(inputs)))
        except RecordError as err:
            outcomes[i] = Outcome(error=err)
        except Exception as err:  # noqa: BLE001 - a backend's own check that missed this input
            outcomes[i] = Outcome(error=RecordError(f"the model cannot take this record's inputs: "
                                                    f"{type(err).__name__}: {err}"))
    _predict_isolating(model, prepared, outcomes)
    return outcomes  # type: ignore[return-value]


def _predict_isolating(model: LoadedModel, items, outcomes) -> None:
    if not items:
        return
    try:
        results = model.predict([p for _, p in items])
    except Exception as err:  # the framework's own errors: any type
        if len(items) == 1:
            outcomes[items[0][0]] = Outcome(error=PredictionError(f"the model threw: {err}"))
            return
        mid = len(items) // 2
        _predict_isolating(model, items[:mid], outcomes)
        _predict_isolating(model, items[mid:], outcomes)
        return
    for (i, _), outputs in zip(items, results, strict=True):
        bad = non_finite_outputs(outputs)
        outcomes[i] = (
            Outcome(error=PredictionError(f"the model returned non-finite output(s) {bad}"))
            if bad
            else Outcome(outputs=outputs)
        )


def non_finite_outputs(outputs: Outputs) -> list[str]:
    return sorted(name for name, value in outputs.items() if non_finite(value))


def non_finite(value: object) -> bool:
    """A float or float array holding NaN or an infinity."""
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all()


def warm_up(model: LoadedModel, samples: Sequence[Mapping[str, PyValue]] | None = None) -> int:
    """Score warm-up inputs; raise WarmUpError if any fails. Returns how many were scored."""
    samples = list(samples) if samples is not None else model.warm_up_inputs()
    if not samples:
        raise WarmUpError("no warm-up inputs: ship them with the model or declare its inputs")
    for i, outcome in enumerate(score_batch(model, samples), 1):
        if not outcome.ok:  # the manager's ERROR says "warm-up failed: " before this
            raise WarmUpError(f"input {i} of {len(samples)}: {outcome.error}")
    return len(samples)
