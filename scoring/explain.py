"""Explanations beside predictions, for the share of records a descriptor asks for.

A chosen record's result gains the model's explanation as outputs `explanation.<name>`
(an output named after an input attributes that input: a heatmap over an image's pixels,
a weight per token of a text). An explanation that fails, or is not finite, never costs
the record its score: the result says `explanation.error` instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from contract.values import PyValue
from scoring.backends.base import LoadedModel, Outputs
from scoring.batch import Outcome, non_finite_outputs
from scoring.errors import ModelLoadError
from scoring.rollout import share_of

PREFIX = "explanation."
ERROR = PREFIX + "error"


def chosen(record_id: str, name: str, version: int, fraction: float) -> bool:
    """Whether the record's result carries an explanation: a stable share of record ids."""
    return fraction >= 1 or (fraction > 0 and share_of(record_id, f"explain:{name}:{version}") < fraction)


def check_explains(model: LoadedModel, fraction: float, where: str, samples: Sequence[Mapping[str, PyValue]]) -> None:
    """At load: a descriptor that asks for explanations needs a model that gives them, and
    they must work on the warm-up inputs."""
    if fraction <= 0:
        return
    if not model.explains():
        raise ModelLoadError(f"{where}: the descriptor asks for explanations of {fraction:.0%} of records, "
                             "but the model has none (a SavedModel needs an 'explain' signature)")
    failed = [o.outputs[ERROR] for o in explain_into(model, samples, [Outcome(outputs={}) for _ in samples])
              if ERROR in o.outputs]
    if failed:
        raise ModelLoadError(f"{where}: its explanation fails on the warm-up inputs: {failed[0]}")


def explain_into(model: LoadedModel, inputs: Sequence[Mapping[str, PyValue]],
                 outcomes: Sequence[Outcome]) -> Sequence[Outcome]:
    """Adds the explanation of each scored record to its outputs (one model call; one per
    record if the batch call throws). Returns `outcomes`."""
    scored = [(o, model.prepare(i)) for o, i in zip(outcomes, inputs, strict=True) if o.ok]
    if not scored:
        return outcomes
    try:
        explained: list[Outputs | str] = list(model.explain([p for _, p in scored]))
    except Exception:  # noqa: BLE001 - the framework's own errors: find the records that throw
        explained = [_explain_one(model, p) for _, p in scored]
    for (outcome, _), explanation in zip(scored, explained, strict=True):
        outcome.outputs.update(_as_outputs(explanation))
    return outcomes


def _explain_one(model: LoadedModel, prepared: dict) -> Outputs | str:
    try:
        return model.explain([prepared])[0]
    except Exception as err:  # noqa: BLE001
        return f"the explanation threw: {err}"


def _as_outputs(explanation: Outputs | str) -> Outputs:
    if isinstance(explanation, str):
        return {ERROR: explanation}
    bad = non_finite_outputs(explanation)
    if bad:
        return {ERROR: f"the explanation has non-finite output(s) {bad}"}
    return {PREFIX + name: value for name, value in explanation.items()}
