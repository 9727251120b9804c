"""The cases at parallelism 4 on two TaskManagers (`World.scaled_job`): 16 data types over a
4-partition topic, so every subtask owns keys, while one TaskManager of the two, the
JobManager or the broker is killed with `kill -9`, and a TaskManager during a model swap.
They run last: the first one restarts the cluster and ends the other jobs.
"""

from __future__ import annotations

import time
from pathlib import Path

from contract import scoring_pb2 as pb
from faults import disrupt
from faults.cases import Case, Score, streamed, version_runs
from faults.outputs import is_event
from faults.report import CaseResult
from faults.stream import Section
from faults.world import RECOVERY_TIMEOUT_S, SCALE_TASKMANAGERS, Job, World, say
from infra import flink_cluster
from infra.job_harness import SCALE_DATA_TYPES, latest_checkpoint
from infra.procs import wait_until

Event = pb.ModelEvent
restarted_from: dict[str, Path] = {}  # a job submitted again after a JobManager kill -> its checkpoint


def _scaled(case: Case) -> Case:
    def run(world: World) -> list[CaseResult]:
        world.scaled_job()
        return case(world)
    return run


def first_result_after(job: Job, section: Section, killed_at: float, sent_before: int) -> str:
    """Seconds from a kill to the first result of a record sent after it (`sent_before`: how
    many the section had sent then): the job's recovery as a user sees it."""
    wait_until(lambda: bool(job.outputs.scores_of(section.ids_so_far()[sent_before:])), RECOVERY_TIMEOUT_S,
               "a result of a record sent after the kill", interval_s=0.2)
    return f"first result of a record sent after the kill: {time.monotonic() - killed_at:.1f}s after it"


def one_taskmanager_killed(world: World, section: Section) -> list[str]:
    """kill -9 one TaskManager of two mid-stream; a fresh one takes its place (as a resource
    manager would start one), so the job finds its 4 slots again."""
    time.sleep(3)
    killed_at, sent_before = time.monotonic(), len(section.ids_so_far())
    notes = [disrupt.kill_taskmanager(flink_cluster.taskmanager_pids()[0])]
    disrupt.start_taskmanager()
    notes.append(first_result_after(world.scaled_job(), section, killed_at, sent_before))
    return notes


def jobmanager_killed(world: World, section: Section) -> list[str]:
    """kill -9 the JobManager. Without high availability the job dies with it: the JobManager
    is started again and the job submitted again from its latest retained checkpoint."""
    job = world.scaled_job()
    time.sleep(3)
    killed_at, sent_before = time.monotonic(), len(section.ids_so_far())
    notes = [disrupt.kill_jobmanager()]
    checkpoint = latest_checkpoint(job.setup.workdir / "checkpoints" / job.job_id)
    flink_cluster.start_jobmanager()
    # A TaskManager drops the dead job's tasks some 40 s after the new JobManager: that can take
    # it down (README, "Known limits"). Wait for it, then replace what died, then resubmit.
    wait_until(old_tasks_dropped, RECOVERY_TIMEOUT_S, "the TaskManagers dropped the old job's tasks",
               interval_s=1)
    flink_cluster.ensure_taskmanagers(SCALE_TASKMANAGERS)
    old = job.job_id
    world.resubmit(job, "--restore-from", checkpoint.as_uri())
    restarted_from[job.job_id] = checkpoint
    say(f"job {old} submitted again from {checkpoint.name}: {job.job_id}")
    notes += [f"job submitted again from {checkpoint.name} of {old}",
              first_result_after(job, section, killed_at, sent_before)]
    return notes


def old_tasks_dropped() -> bool:
    """Every live TaskManager registered with the new JobManager, all their slots free."""
    try:
        registered = flink_cluster.rest("/taskmanagers")["taskmanagers"]
    except (OSError, ValueError):  # the JobManager is still starting
        return False
    return (len(registered) >= len(flink_cluster.taskmanager_pids()) > 0
            and all(t["freeSlots"] == t["slotsNumber"] for t in registered))


def restored_from_checkpoint(job: Job, scores: list[Score], r: CaseResult) -> None:
    """Flink reports the first restore of a job given `--fromSavepoint` (what `--restore-from`
    passes) as a savepoint's, even of a checkpoint: the path tells."""
    stats = flink_cluster.rest(f"/jobs/{job.job_id}/checkpoints")
    counts, restored = stats["counts"], stats["latest"].get("restored") or {}
    expected = restarted_from.get(job.job_id)
    r.check("the new job started from the old job's latest retained checkpoint, and did not restart",
            expected is not None and restored.get("external_path", "").endswith(str(expected))
            and counts["restored"] == 1, f"expected {expected}; restored: {restored}; counts: {counts}")


def broker_killed(world: World, section: Section) -> list[str]:
    time.sleep(3)
    return [disrupt.restart_broker(world.broker, down_s=10, kill=True)]


def killed_during_swap(world: World, section: Section) -> list[str]:
    """v2 of every data type is published; as soon as the first data type reports AVAILABLE
    v2 (others still loading or swapping), one TaskManager of two is killed."""
    job = world.scaled_job()
    time.sleep(3)
    for data_type in SCALE_DATA_TYPES:
        d = world.publish(data_type, data_type, world.samples["wine-pmml"] / "model.pmml", pb.PMML)
        world.served[data_type] = d.version
    first = job.outputs.wait_event(lambda e: e.state == Event.AVAILABLE and e.model_version == 2
                                   and e.data_type in SCALE_DATA_TYPES, "AVAILABLE v2 of a scale data type", 180)
    swapped = {e.data_type for e in job.outputs.events(is_event(Event.AVAILABLE, version=2))}
    killed_at, sent_before = time.monotonic(), len(section.ids_so_far())
    notes = [disrupt.kill_taskmanager(flink_cluster.taskmanager_pids()[0]),
             f"killed when {len(swapped)} of {len(SCALE_DATA_TYPES)} data types had swapped to v2 "
             f"(the first: {first.data_type})"]
    disrupt.start_taskmanager()
    notes.append(first_result_after(job, section, killed_at, sent_before))
    return notes


def old_then_new_everywhere(job: Job, scores: list[Score], r: CaseResult) -> None:
    runs = {t: version_runs(scores, t) for t in SCALE_DATA_TYPES}
    wrong = {t: v for t, v in runs.items() if v != [1, 2]}
    r.check("every data type: the old version, then the new one, never back", not wrong, f"versions {wrong}")


def cases() -> dict[str, Case]:
    return {
        "scale-taskmanager-kill": _scaled(streamed(
            "scale-taskmanager-kill", SCALE_DATA_TYPES, one_taskmanager_killed, restores=1)),
        "scale-jobmanager-kill": _scaled(streamed(
            "scale-jobmanager-kill", SCALE_DATA_TYPES, jobmanager_killed, more_checks=restored_from_checkpoint)),
        "scale-broker-kill": _scaled(streamed("scale-broker-kill", SCALE_DATA_TYPES, broker_killed)),
        "scale-kill-during-swap": _scaled(streamed(
            "scale-kill-during-swap", SCALE_DATA_TYPES, killed_during_swap, restores=1,
            changes=lambda w: {t: f"{t} v{w.served[t]}" for t in SCALE_DATA_TYPES},
            more_checks=old_then_new_everywhere)),
    }
