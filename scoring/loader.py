"""The loader of TF Serving's model lifecycle: fetch an announced version, load it with
its backend, warm it up, and check it against its own verification samples if it ships
any. Only a model that passed all of them is READY to be swapped in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from contract import scoring_pb2 as pb
from contract import signing
from contract.rollout import policy_problem
from model_store.fetcher import ArtifactFetcher, FetchError
from scoring.backends.base import LoadedModel, UnsafeOp
from scoring.backends.registry import BACKENDS, backend_for
from scoring.batch import warm_up
from scoring.errors import ArtifactFetchError, ModelLoadError
from scoring.explain import check_explains
from scoring.verification import verify


class DescriptorError(ModelLoadError):
    stage = "descriptor"


@dataclass
class Servable:
    """A loaded, warmed-up model version and the timings of getting it ready."""

    name: str
    version: int
    model_type: int
    model: LoadedModel
    fetch_ms: float = 0.0
    load_ms: float = 0.0
    warm_up_ms: float = 0.0
    verified: int = 0  # verification samples that gave their expected outputs
    explain_fraction: float = 0.0  # the share of records whose results carry an explanation
    since_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.version)


def parse_descriptor(data: bytes) -> pb.ModelDescriptor:
    try:
        descriptor = pb.ModelDescriptor.FromString(data)
    except DecodeError as err:
        raise DescriptorError(f"model message of {len(data)} bytes is not a ModelDescriptor: {err}") from err
    check_descriptor(descriptor)
    return descriptor


def check_descriptor(d: pb.ModelDescriptor) -> None:
    problems = []
    if not d.name:
        problems.append("name is empty")
    if not d.data_type:
        problems.append("data_type is empty")
    if d.version <= 0:
        problems.append(f"version is {d.version}, it must be > 0")
    if d.model_type not in BACKENDS:
        problems.append(f"model_type {d.model_type} has no backend")
    if d.WhichOneof("artifact") is None:
        problems.append("neither inline_bytes nor location is set")
    if d.rollout.mode not in pb.RolloutPolicy.Mode.values():
        problems.append(f"rollout mode {d.rollout.mode} is unknown")
    elif policy_problem(d.rollout):
        problems.append(f"rollout: {policy_problem(d.rollout)}")
    if not 0 <= d.explain_fraction <= 1:
        problems.append(f"explain_fraction {d.explain_fraction:g} is not a fraction in [0, 1]")
    if problems:
        label = f"descriptor {d.name or '?'} v{d.version}"
        raise DescriptorError(f"{label} is invalid: {'; '.join(problems)}")


def check_signed(d: pb.ModelDescriptor, trust: signing.Trust | None) -> None:
    """Nothing revoked runs; with trusted keys, only a descriptor one of them signed."""
    try:
        signing.verify(d, trust or signing.Trust())
    except signing.SignatureError as err:
        raise DescriptorError(str(err)) from err


def refuse_unsafe(d: pb.ModelDescriptor, found: list[UnsafeOp]) -> None:
    if found:
        ops = sorted({f.op for f in found if f.admissible})
        remedy = (f"; if you trust it, run it anyway with --allow-model-ops {d.data_type}={'+'.join(ops)}"
                  if ops else "")
        raise ModelLoadError(
            f"model {d.name} v{d.version} was refused before loading: it uses "
            f"{'; '.join(f.describe() for f in found[:3])}"
            f"{f' and {len(found) - 3} more' if len(found) > 3 else ''}. A model's graph is code that runs "
            f"with the TaskManager's rights{remedy}")


def load_servable(descriptor: pb.ModelDescriptor, fetcher: ArtifactFetcher,
                  trust: signing.Trust | None = None,
                  allowed_ops: Mapping[str, frozenset[str]] | None = None) -> Servable:
    """Check the signature and the revocations (`trust`), fetch, refuse file-system and process ops
    (but for the data type's `allowed_ops`), load and warm up. Raises a ModelLoadError
    subclass on any failure."""
    check_signed(descriptor, trust)
    try:
        fetched = fetcher.fetch(descriptor)
    except FetchError as err:
        raise ArtifactFetchError(str(err)) from err
    started = time.monotonic()
    backend = backend_for(descriptor.model_type)
    refuse_unsafe(descriptor, backend.unsafe_ops(fetched.path, (allowed_ops or {}).get(descriptor.data_type,
                                                                                       frozenset())))
    model = backend.load(fetched.path, descriptor.signature_name)
    loaded = time.monotonic()
    try:
        warm_up(model)
        check_explains(model, descriptor.explain_fraction, f"model {descriptor.name} v{descriptor.version}",
                       model.warm_up_inputs())
        samples = model.verification()
        verified = verify(model, samples) if samples is not None else 0
    except ModelLoadError:
        model.release()
        raise
    return Servable(
        name=descriptor.name,
        version=descriptor.version,
        model_type=descriptor.model_type,
        model=model,
        fetch_ms=fetched.fetch_ms,
        load_ms=(loaded - started) * 1000,
        warm_up_ms=(time.monotonic() - loaded) * 1000,
        verified=verified,
        explain_fraction=descriptor.explain_fraction,
    )
