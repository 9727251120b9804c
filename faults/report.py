"""The faults report: one row per case and delivery guarantee, as JSON and as a table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

EXACTLY_ONCE, AT_LEAST_ONCE = "exactly-once", "at-least-once"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class CaseResult:
    name: str
    delivery: str
    sent: int = 0
    scored: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0  # an outcome other than the expected one (scored vs dead-lettered, reason)
    seconds: float = 0.0
    models_before: dict[str, str] = field(default_factory=dict)
    models_after: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, bool(ok), detail))

    @property
    def ok(self) -> bool:
        exact = self.delivery != EXACTLY_ONCE or self.duplicated == 0
        return self.lost == 0 and exact and all(c.ok for c in self.checks)

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def write_json(results: list[CaseResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.as_dict() for r in results], indent=1) + "\n")


COLUMNS = ("case", "delivery", "sent", "scored", "dead_lettered", "lost", "duplicated", "ok", "seconds")


def table(results: list[CaseResult]) -> str:
    rows = [COLUMNS] + [
        (r.name, r.delivery, r.sent, r.scored, r.dead_lettered, r.lost, r.duplicated,
         "yes" if r.ok else "NO", f"{r.seconds:.0f}")
        for r in results]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(str(v).ljust(w) if i < 2 else str(v).rjust(w)
                       for i, (v, w) in enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failures = [f"  {r.name} [{r.delivery}]: {c.name}: {c.detail}"
                for r in results for c in r.checks if not c.ok]
    return "\n".join(lines + (["", "failed checks:", *failures] if failures else []))
