"""A rollout policy as the contract defines it: its defaults, what makes one unrunnable, and
how it reads in events and CLI output (used by the job and by the model store's CLI)."""

from __future__ import annotations

from contract import scoring_pb2 as pb

DEFAULT_MIN_RECORDS = 1000


def min_records(gate: pb.Gate) -> int:
    return gate.min_records or DEFAULT_MIN_RECORDS


def in_rollout(d: pb.ModelDescriptor) -> bool:
    """A DEPLOY with a SHADOW or CANARY policy (PROMOTE and ROLLBACK serve at once)."""
    return d.action == pb.ModelDescriptor.DEPLOY and d.rollout.mode != pb.RolloutPolicy.IMMEDIATE


def policy_problem(p: pb.RolloutPolicy) -> str:
    """Why a rollout policy cannot be run, or ""."""
    g = p.gate
    if p.mode == pb.RolloutPolicy.CANARY and not 0 < p.canary_percent <= 100:
        return f"canary_percent {p.canary_percent:g} is not in (0, 100]"
    if not 0 <= p.sample <= 1:
        return f"sample {p.sample:g} is not a fraction in [0, 1]"
    if not 0 <= g.min_agreement <= 1 or not 0 <= g.max_error_rate <= 1:
        return "the gate's min_agreement and max_error_rate are fractions in [0, 1]"
    if min(g.min_records, g.max_duration_ms, g.tolerance, g.max_latency_ratio, g.watch_ms) < 0:
        return "the gate's counts, durations, tolerance and ratio cannot be negative"
    return ""


def describe_policy(p: pb.RolloutPolicy) -> str:
    g = p.gate
    how = (f"shadow of {p.sample or 1:.0%} of records" if p.mode == pb.RolloutPolicy.SHADOW
           else f"canary for {p.canary_percent:g}% of entities by {p.entity_field or 'record id'}")
    checks = [f"{min_records(g):,} records"]
    if g.min_agreement:
        checks.append(f"agreement >= {g.min_agreement:g} (tolerance {g.tolerance:g})")
    if g.max_error_rate:
        checks.append(f"error rate <= {g.max_error_rate:g}")
    if g.max_latency_ratio:
        checks.append(f"p99 latency ratio <= {g.max_latency_ratio:g}")
    if g.max_duration_ms:
        checks.append(f"within {g.max_duration_ms / 1000:g} s")
    then = "then waits for a person" if g.manual_promotion else "then promotes"
    watch = f", watched for {g.watch_ms / 1000:g} s" if g.watch_ms and g.max_error_rate else ""
    return f"{how}; gate: {', '.join(checks)}; {then}{watch}"
