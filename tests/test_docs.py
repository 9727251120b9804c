"""The README and docs/ against the code they describe: no cluster, no Kafka, a few seconds.

- the README's flag table is what `infra.flag_table` renders from the job's parser now;
- every `make <target>` they name is a target of the Makefile;
- every `--flag` in a command line they show (the job's, `model-store`'s, another tool's) is
  a flag of that command's parser, and every `model-store <cmd>` names a real subcommand;
- every relative link points to a file that exists (and a `#anchor` to one of its headings);
- the README's Layout table lists exactly the repository's top-level folders.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
from pathlib import Path

import pytest

from infra import flag_table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]

# Flags of programs that are not this project's, named in command lines the docs show
# beside ours. Only bare `--flag` code spans are checked against it (commands of these tools
# are recognised by name and skipped).
FOREIGN_FLAGS = {
    "--add-scram",  # kafka-storage.sh format (docs/security.md)
    "--resource-pattern-type",  # kafka-acls.sh (docs/security.md)
}
FOREIGN_TOOLS = ("kafka-topics.sh", "kafka-configs.sh", "kafka-acls.sh", "kafka-storage.sh",
                 "kubectl", "openssl", "curl", "mvn", "pip")


# --- reading Markdown -------------------------------------------------------------------

def _split(text: str) -> tuple[list[str], str]:
    """Fenced code blocks' logical lines (continuations joined, comments cut), and the prose
    with the blocks blanked out."""
    lines, prose, in_block = [], [], False
    pending = ""
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            in_block = not in_block
            prose.append("")
            continue
        if not in_block:
            prose.append(line)
            continue
        prose.append("")
        line = re.sub(r"(^|\s)#.*$", "", line)
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines, "\n".join(prose)


def code_spans(prose: str) -> list[str]:
    return [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", prose)]


def commands(text: str) -> list[str]:
    """Every piece of code a document shows: each command of a code block, each code span."""
    lines, prose = _split(text)
    out = []
    for line in lines:
        out += [part.strip() for part in re.split(r"\s(?:&&|;|\|)\s", line) if part.strip()]
    return out + code_spans(prose)


def headings(text: str) -> list[str]:
    _, prose = _split(text)
    return [m.group(2).strip() for m in re.finditer(r"^(#{1,6})\s+(.*)$", prose, re.M)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for h in headings(text):
        s = slug(h)
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def _doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- what the code defines --------------------------------------------------------------

@functools.cache
def job_flags() -> list[flag_table.Flag]:
    return flag_table.job_flags()


@functools.cache
def job_flag_names() -> frozenset[str]:
    return frozenset(f.name for f in job_flags())


@functools.cache
def make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", text, re.M))
    for phony in re.findall(r"^\.PHONY:((?:.*\\\n)*.*)$", text, re.M):
        targets |= set(phony.replace("\\", " ").split())
    return frozenset(targets)


@functools.cache
def model_store() -> tuple[frozenset[str], dict[str, frozenset[str]], frozenset[str]]:
    """`model-store`: its global flags, its subcommands' flags, and the global flags that take
    no value."""
    import argparse

    from model_store.cli import parser

    p = parser()
    glob = frozenset(s for a in p._actions for s in a.option_strings)
    no_value = frozenset(s for a in p._actions if a.nargs == 0 for s in a.option_strings)
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    cmds = {name: frozenset(s for a in sp._actions for s in a.option_strings)
            for name, sp in sub.choices.items()}
    return glob, cmds, no_value


@functools.cache
def module_parser(module: str) -> tuple[frozenset[str], frozenset[str]]:
    """A tool's flags and its positional command's choices, read from its source: the string
    literals of its `add_argument` calls (these tools build their parsers inside main())."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__main__.py"
    flags, choices = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"):
            continue
        names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        flags |= {n for n in names if n.startswith("-")}
        if names and not names[0].startswith("-"):
            for kw in node.keywords:
                if kw.arg == "choices" and isinstance(kw.value, (ast.List, ast.Tuple)):
                    choices |= {e.value for e in kw.value.elts if isinstance(e, ast.Constant)}
    return frozenset(flags), frozenset(choices)


def _tool_modules() -> list[str]:
    mods = []
    for top in ("bench", "faults", "infra", "samples", "demo", "contract"):
        for path in sorted((ROOT / top).glob("*.py")):
            mod = f"{top}.{path.stem}" if path.stem != "__main__" else top
            mods.append(mod)
    return mods


@functools.cache
def every_flag() -> frozenset[str]:
    out = set(job_flag_names())
    glob, cmds, _ = model_store()
    out |= glob
    for flags in cmds.values():
        out |= flags
    for mod in _tool_modules():
        out |= module_parser(mod)[0]
    return frozenset(out)


# --- checks of one document (each returns its problems) ---------------------------------

def _flags_in(args: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"(?:^|[\s\[\"'(|])(--[a-zA-Z][\w-]*)", args)]


def _tokens(args: str) -> list[str]:
    return [t.strip("[]()\"'") for t in args.split()]


def make_problems(text: str) -> list[str]:
    problems = []
    for code in commands(text):
        for m in re.finditer(r"(?:^|(?<=[\s(]))make((?:\s+\S+)*)", code):
            for tok in m.group(1).split():
                if re.fullmatch(r"[A-Z_]+=.*", tok):
                    continue
                if not re.fullmatch(r"[a-z][\w-]*", tok):
                    break
                if tok not in make_targets():
                    problems.append(f"`make {tok}` is not a Makefile target (in `{code}`)")
    return problems


def _job_args(code: str) -> list[str]:
    """The job's arguments in a command line, each run of them a string."""
    out = []
    for m in re.finditer(r"python -m jobs\.scoring_job\b(.*)", code):
        out.append(m.group(1))
    for m in re.finditer(r"-py\s+jobs/scoring_job\.py\b(.*)", code):
        out.append(m.group(1))
    m = re.search(r"\bmake\s+(submit|job|rescale)\b.*?\bARGS=(\"[^\"]*\"|'[^']*'|\S+)", code)
    if m:
        out.append(m.group(2).strip("\"'"))
    m = re.search(r"python -m infra\.flink_cluster\s+(?:rescale|run)\b.*?\s--\s(.*)", code)
    if m:
        out.append(m.group(1))
    return out


def job_flag_problems(text: str) -> list[str]:
    problems = []
    for code in commands(text):
        for args in _job_args(code):
            for flag in _flags_in(args):
                if flag not in job_flag_names() and flag != "--help":
                    problems.append(f"{flag} is not a flag of jobs/scoring_job.py (in `{code}`)")
    return problems


def model_store_problems(text: str) -> list[str]:
    glob, cmds, no_value = model_store()
    problems = []
    for code in commands(text):
        for m in re.finditer(r"(?:^|(?<=[\s/(]))model-store\s+(.*)", code):
            toks = _tokens(m.group(1))
            i = 0
            while i < len(toks) and toks[i].startswith("--"):
                flag = toks[i].split("=")[0]
                if flag not in glob:
                    problems.append(f"{flag} is not a flag of model-store (in `{code}`)")
                i += 1 if flag in no_value or "=" in toks[i] else 2
            if i >= len(toks) or toks[i] in ("...", "…"):
                continue
            cmd = toks[i]
            if cmd not in cmds:
                problems.append(f"`model-store {cmd}` is not a model-store command (in `{code}`)")
                continue
            for flag in _flags_in(" ".join(toks[i + 1:])):
                if flag not in cmds[cmd] and flag != "--help":
                    problems.append(f"{flag} is not a flag of `model-store {cmd}` (in `{code}`)")
    return problems


def tool_flag_problems(text: str) -> list[str]:
    """`python -m <tool> ...` of the project's other tools, and `make bench|bench-all|faults
    ARGS=...`, against the flags their parsers define."""
    problems = []
    for code in commands(text):
        runs = [(m.group(1), m.group(2)) for m in re.finditer(r"python -m ([a-z_]+(?:\.[a-z_]+)*)(.*)", code)
                if m.group(1) != "jobs.scoring_job"]
        m = re.search(r"\bmake\s+(bench|bench-all|faults)\b.*?\bARGS=(\"[^\"]*\"|'[^']*'|\S+)", code)
        if m:
            runs.append(("faults.run" if m.group(1) == "faults" else "bench.run", m.group(2).strip("\"'")))
        for module, args in runs:
            top = module.split(".")[0]
            if not (ROOT / top).is_dir():
                continue  # not ours (python -m pip, ...)
            args = args.split(" -- ")[0]  # what follows `--` goes to the job (checked above)
            flags, choices = module_parser(module)
            words = [t for t in _tokens(args) if t and not t.startswith("-")]
            if choices and words and words[0] not in choices:
                problems.append(f"`python -m {module} {words[0]}`: not one of its commands {sorted(choices)}")
            for flag in _flags_in(args):
                if flag not in flags and flag != "--help":
                    problems.append(f"{flag} is not a flag of {module} (in `{code}`)")
    return problems


def bare_flag_problems(text: str) -> list[str]:
    """A code span that is a flag on its own (`--batch-size`, `--execution-mode thread`) names
    a flag of one of the project's parsers, or one of FOREIGN_FLAGS."""
    _, prose = _split(text)
    problems = []
    for span in code_spans(prose):
        if not span.startswith("--") or span.startswith(FOREIGN_TOOLS):
            continue
        for flag in _flags_in(span):
            if flag not in every_flag() and flag not in FOREIGN_FLAGS:
                problems.append(f"{flag} is no flag of the job or of any tool here (in `{span}`)")
    return problems


def link_problems(path: Path, text: str) -> list[str]:
    _, prose = _split(text)
    prose = re.sub(r"`[^`]*`", "", prose)
    problems = []
    for m in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose):
        target = m.group(1)
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            problems.append(f"link to {target}: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} "
                            "does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            problems.append(f"link to {target}: {dest.name} has no heading #{anchor}")
    return problems


def layout_problems(text: str) -> list[str]:
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([^`/]+)/` \|", section, re.M))
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout.split("\n")
    folders = {f.split("/")[0] for f in files if "/" in f}
    return ([f"{d}/ is a top-level folder the Layout table omits" for d in sorted(folders - listed)]
            + [f"{d}/ is in the Layout table but not in the repository" for d in sorted(listed - folders)])


# --- the tests --------------------------------------------------------------------------

def test_readme_flag_table_is_current():
    table = flag_table.render(job_flags())
    assert flag_table.between_markers(README.read_text()) == table, (
        "the README's flag table is stale: run `python -m infra.flag_table --write README.md`")


def test_flag_table_has_every_flag_of_the_job():
    rows = re.findall(r"^\| `(--[\w-]+)` \|", flag_table.between_markers(README.read_text()), re.M)
    assert rows == [f.name for f in job_flags()]
    assert {"--batch-size", "--columnar", "--trusted-keys"} <= set(rows)


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_make_targets_exist(doc):
    assert make_problems(doc.read_text()) == []


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_job_flags_exist(doc):
    assert job_flag_problems(doc.read_text()) == []


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_model_store_commands_and_flags_exist(doc):
    assert model_store_problems(doc.read_text()) == []


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_tool_flags_exist(doc):
    assert tool_flag_problems(doc.read_text()) == []


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_flags_named_alone_exist(doc):
    assert bare_flag_problems(doc.read_text()) == []


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_relative_links_resolve(doc):
    assert link_problems(doc, doc.read_text()) == []


def test_layout_lists_every_top_level_folder():
    assert layout_problems(README.read_text()) == []


def test_the_checks_see_what_they_check():
    """Each check finds what it is for in the docs (a parser that broke would pass silently)."""
    text = "\n".join(d.read_text() for d in DOCS)
    assert {"demo", "test", "submit", "bench", "faults"} <= make_targets()
    codes = commands(text)
    assert sum(bool(_job_args(c)) for c in codes) >= 3
    assert sum(bool(re.search(r"model-store\s+publish", c)) for c in codes) >= 3
    assert "--canary" in model_store()[1]["publish"]
    assert "--only" in module_parser("bench.run")[0]
    assert "rescale" in module_parser("infra.flink_cluster")[1]
    assert len(re.findall(r"\]\((?!https?:)", text)) >= 20
