"""Faults and bad input: a short version of `make faults` (the same `faults` code) against
the standalone cluster, a broker of its own and the model store; and the check that no
code path deserialises or evaluates what a message carries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from faults import bad_records
from faults.cases import QUICK
from faults.report import EXACTLY_ONCE, table
from faults.run import run
from faults.world import MAX_RECORD_BYTES
from infra import paths
from tests.conftest import load_samples


@pytest.mark.integration
@pytest.mark.cluster
def test_kills_broker_restart_store_errors_and_fuzz_lose_nothing(standalone_cluster, tmp_path):
    """The quick set, then one TaskManager of two killed under the job at parallelism 4 (last:
    it restarts the cluster with two TaskManagers; one again afterwards)."""
    cases = [*QUICK, "scale-taskmanager-kill"]
    results = run(cases, kills=1, fuzz_bad=10_000, deliveries=(EXACTLY_ONCE,), workdir=tmp_path,
                  tensorflow=False)
    report = table(results)
    assert sorted(r.name for r in results) == sorted(cases), report
    for r in results:
        assert r.lost == 0 and r.duplicated == 0, report
        assert all(c.ok for c in r.checks), report
    fuzz = next(r for r in results if r.name == "fuzz-10000")
    assert fuzz.dead_lettered >= 10_000 and fuzz.scored == 2_500, report
    assert all(r.sent > 0 for r in results), report


def test_the_fuzz_mix_is_what_it_claims(samples):
    rows = load_samples(samples["wine-pmml"])["inputs"]  # the rows the faults run fuzzes
    mix = bad_records.fuzz(rows, "t", "p", n_bad=2_000, n_good=100, max_record_bytes=MAX_RECORD_BYTES)
    fields = sorted(rows[0])
    good = [p for p in mix.payloads if bad_records.scorable(p, "t", fields, MAX_RECORD_BYTES)]
    assert len(good) == len(mix.good) == 100
    assert len(mix.payloads) == len(set(mix.payloads)) == 2_100
    assert len({b.key for b in mix.bad}) == 2_000


# What would turn message bytes into code: deserialisers that run code, and eval/exec.
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "joblib", "dill", "cloudpickle", "marshal",
                     "shelve", "jsonpickle", "torch"}
FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_METHODS = {"load_model", "read_pickle", "unsafe_load", "full_load"}  # Keras, pandas, yaml
MESSAGE_PATHS = ["scoring", "model_store", "jobs"]


def _problems(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            found += [f"imports {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_BUILTINS or \
                    isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_METHODS:
                found.append(f"calls {ast.unparse(func)}()")
            if ast.unparse(func) == "yaml.load":
                found.append("calls yaml.load()")
            if any(k.arg == "allow_pickle" for k in node.keywords):
                found.append("passes allow_pickle")
    return [f"{path.relative_to(paths.ROOT)}:{p}" for p in found]


def test_no_code_path_deserialises_pickles_or_evaluates_message_content():
    files = [p for d in MESSAGE_PATHS for p in (paths.ROOT / d).rglob("*.py") if "pb" not in p.parts]
    assert len(files) > 20
    problems = [p for f in files for p in _problems(f)]
    assert not problems, problems
    # The detector itself finds what it looks for.
    assert _problems(paths.ROOT / "faults" / "bad_models.py") == ["faults/bad_models.py:imports pickle"]
