"""Imports run one way: contract -> model_store -> scoring -> jobs -> tools.

Read from the source with `ast` (nothing is imported), so a lazy import inside a function
counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Package -> layer. A package may import its own layer and the ones below it.
LAYERS = {
    "contract": 0,
    "model_store": 1,
    "scoring": 2,
    "jobs": 3,
    "infra": 4, "bench": 4, "faults": 4, "samples": 4, "demo": 4,
}
# PyFlink belongs to the job layer and the tools that run jobs.
PYFLINK_FROM = 3


def imported_modules(source: Path) -> list[tuple[int, str]]:
    """(line, top-level name) of every absolute import in a file."""
    found = []
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(package: str, root: Path = ROOT) -> list[str]:
    own = LAYERS[package]
    found = []
    for source in sorted((root / package).rglob("*.py")):
        for line, name in imported_modules(source):
            where = f"{source.relative_to(root)}:{line}"
            if LAYERS.get(name, -1) > own:
                found.append(f"{where} imports {name} (layer {LAYERS[name]}, above {package}'s {own})")
            if name == "pyflink" and own < PYFLINK_FROM:
                found.append(f"{where} imports pyflink: only jobs/ and the tools may")
    return found


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_a_package_imports_only_its_own_layer_and_those_below(package):
    assert (ROOT / package).is_dir(), f"{package}/ is missing: update LAYERS"
    assert violations(package) == []


def test_every_package_of_the_project_has_a_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - {"tests"} == set(LAYERS)


def test_the_check_sees_an_upward_import_even_inside_a_function(tmp_path):
    (tmp_path / "scoring").mkdir()
    (tmp_path / "scoring" / "leak.py").write_text(
        "def f():\n    from jobs.score_records import ScoreRecords\n    import pyflink.common\n")
    assert violations("scoring", tmp_path) == [
        "scoring/leak.py:2 imports jobs (layer 3, above scoring's 2)",
        "scoring/leak.py:3 imports pyflink: only jobs/ and the tools may",
    ]
