"""The disruptions: `kill -9` of a TaskManager, of its Python workers or of the JobManager, and
a restart or a `kill -9` of the Kafka broker. Only processes of the cluster and broker this
run started are touched."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from infra import flink_cluster
from infra.kafka_broker import KafkaBroker
from infra.procs import alive, wait_until

PYTHON_WORKER_MARK = b"pyflink.fn_execution"  # `python -m pyflink.fn_execution.beam.beam_boot`


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process is gone
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def python_workers() -> list[int]:
    """The Python worker processes the TaskManager started (one per task with Python code)."""
    return [p for tm in flink_cluster.taskmanager_pids() for p in descendants(tm)
            if PYTHON_WORKER_MARK in _cmdline(p)]


def kill9(pids: list[int], what: str) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: not any(alive(p) for p in pids), 30, f"{what} {pids} gone after kill -9")


def kill_python_workers() -> str:
    workers = python_workers()
    if not workers:
        raise RuntimeError("the TaskManager has no Python worker to kill")
    kill9(workers, "Python workers")
    return f"kill -9 Python worker(s) {workers}"


def kill_taskmanager(pid: int | None = None, orphan_grace_s: float = 5) -> str:
    """kill -9 a TaskManager (`pid`, or the only one). Its Python workers outlive it (PyFlink's
    workers do not notice that their TaskManager died): the ones still alive after
    `orphan_grace_s` are killed."""
    pids = flink_cluster.taskmanager_pids()
    if pid is None and len(pids) != 1:
        raise RuntimeError(f"expected one TaskManager process, found {pids}")
    pid = pid or pids[0]
    if pid not in pids:
        raise RuntimeError(f"{pid} is not a TaskManager of this cluster: {pids}")
    workers = [p for p in descendants(pid) if PYTHON_WORKER_MARK in _cmdline(p)]
    kill9([pid], "TaskManager")
    flink_cluster.forget_dead_taskmanagers()
    deadline = time.monotonic() + orphan_grace_s
    while time.monotonic() < deadline and any(alive(p) for p in workers):
        time.sleep(0.5)
    stragglers = [p for p in workers if alive(p)]
    if stragglers:
        kill9(stragglers, "orphaned Python workers")
    note = f"kill -9 TaskManager {pid}" + (f" (1 of {len(pids)})" if len(pids) > 1 else "")
    return note + (f" (its Python workers {stragglers} outlived it {orphan_grace_s:.0f}s: killed)"
                   if stragglers else "")


def kill_jobmanager() -> str:
    pids = flink_cluster.jobmanager_pids()
    if len(pids) != 1:
        raise RuntimeError(f"expected one JobManager process, found {pids}")
    kill9(pids, "JobManager")
    return f"kill -9 JobManager {pids[0]}"


def start_taskmanager(timeout_s: float = 120) -> None:
    """A fresh TaskManager, registered with the JobManager."""
    known = flink_cluster.taskmanager_ids()
    flink_cluster.start_taskmanager()
    wait_until(lambda: bool(flink_cluster.taskmanager_ids() - known), timeout_s,
               "a new TaskManager registered", interval_s=1)


def restart_broker(broker: KafkaBroker, down_s: float, kill: bool = False) -> str:
    """Stop the broker (SIGTERM, or `kill -9`), start it again after `down_s`."""
    if kill:
        broker.kill()
    else:
        broker.stop()
    time.sleep(down_s)
    started = time.monotonic()
    broker.start()
    how = "killed (kill -9)" if kill else "stopped"
    return f"broker {how}, down for {down_s:.0f}s, back in {time.monotonic() - started:.0f}s"
