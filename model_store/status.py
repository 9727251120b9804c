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
    return status


def render(status: dict[str, DataTypeStatus]) -> str:
    lines = [f"{'data type':<16}{'model':<18}{'version':>8}  {'since':<20}{'scored':>10}{'mean ms':>9}  last problem"]
    for s in sorted(status.values(), key=lambda s: s.data_type):
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.since_ms / 1000)) if s.since_ms else "-"
        lines.append(f"{s.data_type:<16}{s.model or '-':<18}{s.version:>8}  {since:<20}"
                     f"{int(s.stats.get('usage', 0)):>10}{s.stats.get('mean_ms', 0.0):>9.2f}  "
                     f"{s.last_problem[:80]}")
    return "\n".join(lines)
