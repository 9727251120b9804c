"""Model loads that kill their worker (scoring.poison.LoadJournal, run by the ModelManager).

A backend of the test's own, registered with SCORING_EXTRA_BACKENDS, whose `load` does what
its artifact says: `os.abort()` (a real death by SIGABRT, as a crash in a native loader would
be; no exception to catch), raise, wait, or load. The manager and the loader run in a child
process with the subtask's journal file, as a restarted task would run them: no PyFlink, no
cluster, a second or so a child. A job whose model aborts its worker at load is the
`load-crash` case of `make faults` (faults/cases.py).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from contract import scoring_pb2 as pb
from scoring.errors import ModelLoadError
from scoring.loader import Servable
from scoring.manager import ERROR, READY, ModelManager
from scoring.poison import LoadJournal, load_key

ROOT = Path(__file__).resolve().parent.parent
TYPE = 97  # 98 is faults/crashing_model.py's, 99 test_backends.py's

BACKEND = '''
import json, os, time
from scoring.backends.base import InputField, LoadedModel, ModelBackend

class Doubling(LoadedModel):
    input_fields = {"x": InputField("x", "float")}
    def predict(self, batch):
        return [{"y": 2 * r["x"]} for r in batch]
    def warm_up_inputs(self):
        return [{"x": 1.0}]
    def release(self):
        pass

class ArtifactSaysBackend(ModelBackend):
    """The artifact: {"do": "abort" | "raise" | "load", "marker": file, "journal": file}."""
    def load(self, artifact, signature_name=""):
        spec = json.loads(artifact.read_text())
        with open(spec["journal"]) as f:
            in_flight = json.loads(f.read())["in_flight"]
        with open(spec["marker"], "a") as f:  # the backend's load ran, and what was journalled then
            f.write(json.dumps({"do": spec["do"], "in_flight": in_flight}) + "\\n")
        if spec["do"] == "abort":
            os.abort()
        if spec["do"] == "raise":
            raise ValueError("not a model")
        return Doubling()
'''

# A task's manager and loader, as the job's operator builds them (jobs/score_models.py), loading
# the versions of model "m" it is given one after the other; prints each one's outcome.
DRIVER = f'''
import json, sys, time
from functools import partial
from pathlib import Path
from contract import scoring_pb2 as pb
from model_store.fetcher import ArtifactFetcher, FetchPolicy
from scoring.loader import load_servable
from scoring.manager import ModelManager
from scoring.poison import LoadJournal

journal, cache, loads = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
load = partial(load_servable, fetcher=ArtifactFetcher(cache, FetchPolicy.parse("")))
manager = ModelManager(load, journal=LoadJournal(journal, max_crashes=2))
for version, artifact in loads:
    manager.request(pb.ModelDescriptor(name="m", data_type="d", version=version, model_type={TYPE},
                                       inline_bytes=artifact.encode()))
    while not (done := manager.collect()):
        time.sleep(0.01)
    [(_, status)] = done
    print(json.dumps({{"version": version, "state": status.state, "error": status.error}}), flush=True)
manager.close()
'''

REFUSED = ("loading m v1 crashed the Python worker 2 times (a crash in native code, not an exception); "
           "it is not loaded again: publish a fixed version")


class Task:
    """One subtask's journal and cache in tmp_path, and the artifacts its loads are given."""

    def __init__(self, tmp_path: Path) -> None:
        (tmp_path / "aborting_backend.py").write_text(BACKEND)
        self.dir = tmp_path
        self.journal = tmp_path / ".journal" / "scoring-job-0.loads.json"
        self.marker = tmp_path / "loaded"

    def artifact(self, do: str, note: str = "") -> str:
        return json.dumps({"do": do, "marker": str(self.marker), "journal": str(self.journal), "note": note})

    def run(self, *loads: tuple[int, str]) -> subprocess.CompletedProcess:
        env = {**os.environ, "SCORING_EXTRA_BACKENDS": f"{TYPE}=aborting_backend:ArtifactSaysBackend",
               "PYTHONPATH": os.pathsep.join([str(ROOT), str(self.dir)])}
        return subprocess.run(
            [sys.executable, "-c", DRIVER, str(self.journal), str(self.dir / "cache"), json.dumps(loads)],
            env=env, cwd=self.dir, capture_output=True, text=True, timeout=60,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))  # no core file per abort

    def backend_calls(self) -> list[dict]:
        """What the backend's load was called for since the last look (and forget them)."""
        if not self.marker.exists():
            return []
        calls = [json.loads(line) for line in self.marker.read_text().splitlines()]
        self.marker.unlink()
        return calls

    def journalled(self) -> dict:
        return json.loads(self.journal.read_text())


def outcomes(done: subprocess.CompletedProcess) -> dict[int, dict]:
    assert done.returncode == 0, done.stderr
    return {o["version"]: o for o in map(json.loads, done.stdout.splitlines())}


def key(version: int, artifact: str) -> str:
    return load_key(pb.ModelDescriptor(name="m", version=version, inline_bytes=artifact.encode()))


def test_a_load_that_aborted_its_worker_twice_is_refused_at_once_the_third_time(tmp_path):
    task = Task(tmp_path)
    aborts, fine = task.artifact("abort"), task.artifact("load")
    for crashes_before in (0, 1):  # the task loads v1, dies; restarted, finds it, loads it again, dies
        died = task.run((1, aborts))
        assert died.returncode == -signal.SIGABRT, died.stderr
        assert task.backend_calls() == [{"do": "abort", "in_flight": [key(1, aborts)]}]
        journal = task.journalled()  # as the dead worker left it
        assert journal["in_flight"] == [key(1, aborts)]
        assert journal["crashes"] == ({key(1, aborts): 1} if crashes_before else {})

    third = outcomes(task.run((1, aborts), (2, fine)))
    assert third[1]["state"] == ERROR and third[1]["error"] == f"load failed: {REFUSED}"
    assert task.backend_calls() == [{"do": "load", "in_flight": [key(2, fine)]}]  # v2's only: v1's never ran
    assert third[2]["state"] == READY  # v1's crashes do not block v2 of the same model
    assert task.journalled() == {"in_flight": [], "crashes": {key(1, aborts): 2}}

    again = outcomes(task.run((1, aborts)))  # still refused in the next task: the count is kept
    assert again[1]["error"] == f"load failed: {REFUSED}" and task.backend_calls() == []


def test_loads_that_raise_or_succeed_leave_nothing_in_the_journal(tmp_path):
    task = Task(tmp_path)
    raises, fine = task.artifact("raise"), task.artifact("load")
    done = outcomes(task.run((1, raises), (2, fine)))
    assert done[1]["state"] == ERROR and "ValueError while loading: not a model" in done[1]["error"]
    assert done[2]["state"] == READY
    assert task.backend_calls() == [{"do": "raise", "in_flight": [key(1, raises)]},  # journalled while they ran
                                    {"do": "load", "in_flight": [key(2, fine)]}]
    assert task.journalled() == {"in_flight": [], "crashes": {}}
    assert outcomes(task.run((1, raises)))[1]["error"] == done[1]["error"]  # a mere error is tried again
    assert task.backend_calls() == [{"do": "raise", "in_flight": [key(1, raises)]}]


def test_other_bytes_under_the_crashed_version_are_not_blamed_and_a_ready_load_forgets_a_crash(tmp_path):
    task = Task(tmp_path)
    aborts, fixed = task.artifact("abort"), task.artifact("load", "fixed")
    for _ in range(2):
        assert task.run((1, aborts)).returncode == -signal.SIGABRT
    assert outcomes(task.run((1, fixed)))[1]["state"] == READY  # republished: other bytes, loaded
    assert task.journalled()["crashes"] == {key(1, aborts): 2}

    dies_once = LoadJournal(tmp_path / "once.json")
    dies_once.loading("1:ab:m")  # ...and the worker dies
    restarted = LoadJournal(tmp_path / "once.json")
    assert restarted.crashes_of("1:ab:m") == 1
    restarted.loading("1:ab:m")
    restarted.loaded("1:ab:m", ready=True)  # a crash, then a READY load: it was not the model
    assert LoadJournal(tmp_path / "once.json").crashes == {}


def wait_collect(manager: ModelManager, n: int) -> list:
    finished, deadline = [], time.monotonic() + 10
    while len(finished) < n and time.monotonic() < deadline:
        finished += manager.collect()
        time.sleep(0.01)
    return finished


class Idle:
    def release(self) -> None:
        pass


def test_two_loads_in_flight_are_both_journalled(tmp_path):
    """An upgrade loads on the manager's loader thread while a data type's current model loads
    on the urgent one: a worker that dies then died in either."""
    path = tmp_path / "loads.json"
    started, go = threading.Barrier(3), threading.Event()

    def load(d):
        started.wait(5)
        go.wait(5)
        return Servable(d.name, d.version, d.model_type, Idle())

    manager = ModelManager(load, journal=LoadJournal(path))
    upgrade = pb.ModelDescriptor(name="m", version=2, sha256="ab" * 32)
    current = pb.ModelDescriptor(name="m", version=1, inline_bytes=b"v1")
    try:
        manager.request(upgrade)
        manager.request(current, urgent=True)
        started.wait(5)
        assert sorted(json.loads(path.read_text())["in_flight"]) == sorted([load_key(current), load_key(upgrade)])
        shutil.copy(path, tmp_path / "as-the-worker-died.json")
        assert LoadJournal(tmp_path / "as-the-worker-died.json").crashes == {load_key(current): 1,
                                                                             load_key(upgrade): 1}
        go.set()
        assert sorted(s.state for _, s in wait_collect(manager, 2)) == [READY, READY]
        assert json.loads(path.read_text()) == {"in_flight": [], "crashes": {}}
    finally:
        go.set()
        manager.close()


def test_a_task_closed_with_a_load_running_does_not_count_it(tmp_path):
    """The manager does not wait for its loads when the task closes; the worker lived."""
    path, go = tmp_path / "loads.json", threading.Event()

    def load(d):
        go.wait(5)
        raise ModelLoadError("late")

    manager = ModelManager(load, journal=LoadJournal(path))
    manager.request(pb.ModelDescriptor(name="m", version=1, sha256="cd" * 32))
    deadline = time.monotonic() + 5
    while not json.loads(path.read_text())["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert json.loads(path.read_text())["in_flight"] == [f"1:{'cd' * 32}:m"]
    manager.close()
    go.set()
    assert LoadJournal(path).crashes == {}


def test_the_key_names_the_version_and_its_bytes():
    d = pb.ModelDescriptor(name="a:b", version=3, sha256="AB" * 32, location="http://x/")
    assert load_key(d) == f"3:{'ab' * 32}:a:b"
    inline = pb.ModelDescriptor(name="m", version=3, inline_bytes=b"x")
    assert load_key(inline) == "3:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881:m"
    assert load_key(pb.ModelDescriptor(name="m", version=3, inline_bytes=b"y")) != load_key(inline)
