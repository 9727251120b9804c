"""The scoring job's flags as a Markdown table (flag, default, help), for the README.

    python -m infra.flag_table                    # print the table
    python -m infra.flag_table --write README.md  # rewrite it between the markers

`jobs/scoring_job.py` builds its argument parser inside `parse_args` and returns only the
parsed namespace, so the table is read from the outside, in a subprocess, through the two
things the module offers: its `--help` text (flags, choices, help) and `parse_args([])`
(every default). The subprocess runs without the `SCORING_*` and `TOPIC_*` variables that
would change the defaults, so the table shows the job's own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- flags:begin -->"
END = "<!-- flags:end -->"

# Environment variables that mark processes (infra/procs.py, tests/conftest.py), not flags.
_MARKS = {"SCORING_FLINK_CLUSTER", "SCORING_TEST_SESSION"}

_PROBE = """
import contextlib, io, json
from jobs import scoring_job
help_text = io.StringIO()
with contextlib.redirect_stdout(help_text):
    try:
        scoring_job.parse_args(["--help"])
    except SystemExit:
        pass
print(json.dumps({"help": help_text.getvalue(), "defaults": vars(scoring_job.parse_args([]))}))
"""

_OPTION = re.compile(r"^  (--[a-z0-9-]+)(?: (\{[^}]*\}|[A-Z0-9_]+))?(?:  +(.*))?$")
_ENV = re.compile(r"\s*\[\$(SCORING_[A-Z0-9_]+)\]$")


@dataclass(frozen=True)
class Flag:
    name: str
    default: object
    help: str
    choices: tuple[str, ...] = ()


def _probe() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TOPIC_") and (not k.startswith("SCORING_") or k in _MARKS)}
    env["COLUMNS"] = "200"
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def parse_help(help_text: str, defaults: dict) -> list[Flag]:
    """The options of the job's `--help` (but -h itself), with their defaults."""
    lines = help_text.split("\n")
    start = lines.index("options:") + 1
    entries: list[list[str]] = []
    for line in lines[start:]:
        if line.startswith("  -h, --help"):
            continue
        m = _OPTION.match(line)
        if m:
            entries.append([m.group(1), m.group(2) or "", m.group(3) or ""])
        elif line.strip() and entries:
            entries[-1][2] = (entries[-1][2] + " " + line.strip()).strip()
    flags = []
    for name, metavar, text in entries:
        env = _ENV.search(text)
        expected = "SCORING_" + name[2:].upper().replace("-", "_")
        if not env or env.group(1) != expected:
            raise ValueError(f"{name}: its help does not name ${expected}: {text!r}")
        choices = tuple(metavar[1:-1].split(",")) if metavar.startswith("{") else ()
        flags.append(Flag(name, defaults[name[2:].replace("-", "_")], text[:env.start()].strip(), choices))
    read = {f.name[2:].replace("-", "_") for f in flags}
    if read != set(defaults):
        raise ValueError(f"--help and parse_args([]) disagree: only in --help {sorted(read - set(defaults))}, "
                         f"only in the defaults {sorted(set(defaults) - read)}")
    return flags


def job_flags() -> list[Flag]:
    probe = _probe()
    return parse_help(probe["help"], probe["defaults"])


def _cell(text: str) -> str:
    """Plain help text made safe in a Markdown table cell."""
    for c in "\\|*<>[]`":
        text = text.replace(c, "\\" + c)
    return text


def _default(value: object) -> str:
    if value == "" or value is None:
        return "(empty)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`"


def render(flags: list[Flag] | None = None) -> str:
    flags = job_flags() if flags is None else flags
    rows = ["| flag | default | help |", "|---|---|---|"]
    for f in flags:
        text = _cell(f.help)
        if f.choices:
            text = (text + " " if text else "") + "(one of " + ", ".join(f"`{c}`" for c in f.choices) + ")"
        rows.append(f"| `{f.name}` | {_default(f.default)} | {text} |")
    return "\n".join(rows) + "\n"


def between_markers(text: str) -> str:
    """What a document holds between the markers (without them)."""
    begin, end = text.find(BEGIN), text.find(END)
    if begin < 0 or end < begin:
        raise ValueError(f"no {BEGIN} ... {END} in the document")
    return text[begin + len(BEGIN):end].strip("\n") + "\n"


def write(path: Path, table: str) -> bool:
    """Put the table between the markers of `path`; whether it changed."""
    text = path.read_text()
    between_markers(text)  # the markers are there
    begin, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    new = text[:begin] + "\n" + table + text[end:]
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--write", type=Path, metavar="FILE",
                   help=f"rewrite the table between {BEGIN} and {END} in FILE")
    args = p.parse_args(argv)
    table = render()
    if args.write is None:
        print(table, end="")
        return 0
    changed = write(args.write, table)
    print(f"{args.write}: {'flags table rewritten' if changed else 'flags table already current'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
