"""What each data type is served by, folded from the model-events topic."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from contract import scoring_pb2 as pb

State = pb.ModelEvent.State


@dataclass
class DataTypeStatus:
    data_type: str
    model: str = ""
    version: int = 0
    since_ms: int = 0
    stats: dict[str, float] = field(default_factory=dict)
    last_problem: str = ""
    rollout: str = ""  # the version in rollout and where it stands, "" when none


ROLLOUT_STATES = (State.ROLLOUT_STARTED, State.SHADOW_STATS, State.GATE_PASSED)
ROLLOUT_ENDS = (State.PROMOTED, State.ABANDONED, State.ERROR)


def fold(events: list[pb.ModelEvent]) -> dict[str, DataTypeStatus]:
    status: dict[str, DataTypeStatus] = {}
    for e in sorted(events, key=lambda e: e.time_ms):
        if not e.data_type:  # a descriptor that did not even parse
            continue
        s = status.setdefault(e.data_type, DataTypeStatus(e.data_type))
        if e.state == State.AVAILABLE:
            s.model, s.version, s.since_ms, s.stats = e.model_name, e.model_version, e.time_ms, {}
        elif e.state == State.STATS and (e.model_name, e.model_version) == (s.model, s.version):
            s.stats = dict(e.stats)
        elif e.state in (State.ERROR, State.REJECTED):
            s.last_problem = f"{State.Name(e.state)} {e.model_name} v{e.model_version}: {e.reason}"
        if e.state in ROLLOUT_STATES:
            s.rollout = f"{e.model_name} v{e.model_version} {State.Name(e.state)}: {rollout_numbers(e)}"
        elif e.state in ROLLOUT_ENDS and s.rollout.startswith(f"{e.model_name} v{e.model_version} "):
            s.rollout = ""
    return status


def rollout_numbers(e: pb.ModelEvent) -> str:
    if e.state != State.SHADOW_STATS:
        return e.reason
    st = e.stats
    agreement = {k.removeprefix("agreement."): v for k, v in st.items() if k.startswith("agreement.")}
    worst = min(agreement.items(), key=lambda kv: kv[1]) if agreement else ("-", 0.0)
    return (f"{int(st['records'])} records, {int(st['compared'])} compared, lowest agreement "
            f"{worst[1]:.3f} ('{worst[0]}'), error rate {st['error_rate']:.3f}, "
            f"p99 latency x{st['latency_ratio']:.2f}, {st['elapsed_ms'] / 1000:.0f} s")


def render(status: dict[str, DataTypeStatus]) -> str:
    lines = [f"{'data type':<16}{'model':<18}{'version':>8}  {'since':<20}{'scored':>10}{'mean ms':>9}  last problem"]
    for s in sorted(status.values(), key=lambda s: s.data_type):
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.since_ms / 1000)) if s.since_ms else "-"
        lines.append(f"{s.data_type:<16}{s.model or '-':<18}{s.version:>8}  {since:<20}"
                     f"{int(s.stats.get('usage', 0)):>10}{s.stats.get('mean_ms', 0.0):>9.2f}  "
                     f"{s.last_problem[:80]}")
        if s.rollout:
            lines.append(f"{'':<16}rollout: {s.rollout[:160]}")
    return "\n".join(lines)
