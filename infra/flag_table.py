"""The scoring job's flags as a Markdown table (flag, default, help), for the README.

    python -m infra.flag_table                    # print the table
    python -m infra.flag_table --write README.md  # rewrite it between the markers

Read from the job's own parser (`jobs.scoring_job.job_parser`), built with an empty
environment so that no SCORING_* or TOPIC_* variable changes the defaults shown.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

BEGIN = "<!-- flags:begin -->"
END = "<!-- flags:end -->"
_ENV = re.compile(r"\s*\[\$SCORING_[A-Z0-9_]+\]$")


@dataclass(frozen=True)
class Flag:
    name: str
    default: object
    help: str
    choices: tuple[str, ...] = ()


def job_flags() -> list[Flag]:
    """Every option of the job's parser but -h, in the order --help lists them."""
    from jobs.scoring_job import job_parser

    return [Flag(a.option_strings[-1], a.default, _ENV.sub("", a.help or "").strip(),
                 tuple(str(c) for c in a.choices or ()))
            for a in job_parser(environ={})._actions if not isinstance(a, argparse._HelpAction)]


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
