"""The `scale` section of `make bench`: the job under `flink run` on the standalone cluster with
two TaskManagers of two slots each, at parallelism 1, 2 and 4, over a 4-partition data topic
and 16 data types (each of the 4 subtasks owns some); and a swap of every data type's model
at parallelism 4, timed from the publish to each data type's first result by the new version.

On 2 cores, parallelism adds Python workers, not cores: read the rates with the load average
each case reports.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from bench.run import (
    Bench,
    Workload,
    committed_records,
    log,
    produce_records,
    result_times,
    steady,
    wait_for_results,
)
from contract import scoring_pb2 as pb
from contract.json_records import read_result
from infra import flink_cluster
from infra.job_harness import SCALE_DATA_TYPES, ScoringSetup
from infra.procs import wait_until
from model_store import cli

TASKMANAGERS, PARTITIONS = 2, 4
TASKMANAGERS_REPLACED: list[int] = []  # PyFlink 2.2.1 can take a TaskManager down when a job is cancelled


class ClusterJob:
    """The scoring job submitted to the standalone cluster (`flink run -d`), cancelled on exit."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.job_id = ""

    def __enter__(self) -> ClusterJob:
        started = flink_cluster.ensure_taskmanagers(TASKMANAGERS)
        if started:
            TASKMANAGERS_REPLACED.append(started)
            log(f"{started} TaskManager(s) died at the previous job's cancellation: started again")
        self.job_id = flink_cluster.submit_scoring_job(self.args)
        return self

    def __exit__(self, *exc) -> None:
        flink_cluster.cancel_job(self.job_id)
        wait_until(lambda: flink_cluster.job_state(self.job_id) in ("CANCELED", "FAILED", "FINISHED"), 120,
                   f"job {self.job_id} cancelled")

    def assert_running(self) -> None:
        state = flink_cluster.job_state(self.job_id)
        assert state == "RUNNING", f"job {self.job_id} is {state}: see .run/flink/log/"


def start_cluster(bench: Bench) -> None:
    if not flink_cluster.start(taskmanagers=TASKMANAGERS):
        raise SystemExit("the scale section starts its own cluster: stop the running one first (make cluster-down)")
    bench.stack.callback(flink_cluster.stop)


def job_args(setup: ScoringSetup, parallelism: int) -> list[str]:
    return setup.job_args(delivery="at-least-once", max_held_records=10**7, parallelism=parallelism,
                          job_name=f"bench scale p={parallelism} {setup.topics['data']}")


def throughput(bench: Bench, kind: str, parallelism: int, n: int) -> dict:
    setup = bench.setup(partitions=PARTITIONS)
    workload = Workload(bench.rows, SCALE_DATA_TYPES)
    bench.publish(setup, kind, SCALE_DATA_TYPES)
    with ClusterJob(job_args(setup, parallelism)) as job:
        producer_rps = bench.warm_then_measure(setup, job, n, timeout_s=900, workload=workload)
        load = os.getloadavg()[0]
    found = steady(result_times(setup.bootstrap, setup.topics["scores"], read_result))
    log(f"scale {kind} p={parallelism}: {found['rps']:,.0f} records/s steady, load average {load:.1f}")
    return {**found, "parallelism": parallelism, "load_avg_1m": load, "producer_rps": producer_rps}


def swap(bench: Bench, parallelism: int = 4, per_tick: int = 2) -> dict:
    """v1 of every data type serves a stream of `per_tick` records per data type every 0.1 s;
    v2 of all 16 is announced in one message batch; per data type, the time from that publish
    to its first result by v2 (broker append time), and per subtask (the data type's owner,
    from its AVAILABLE event) the worst of its data types."""
    setup = bench.setup(partitions=PARTITIONS)
    model = bench.samples["wine-pmml"] / "model.pmml"

    def versions() -> list[pb.ModelDescriptor]:  # names of this case's own: v1, then v2
        stored = [bench.repo.publish(f"swap-{t}", model, pb.PMML, t) for t in SCALE_DATA_TYPES]
        return [cli.descriptor_for(bench.repo, s, bench.store.base_url, 0) for s in stored]

    cli.announce(setup.bootstrap, setup.topics["models"], versions())
    v2 = versions()
    stop = threading.Event()

    def stream() -> None:
        while not stop.wait(0.1):
            produce_records(setup.bootstrap, setup.topics["data"], bench.rows, per_tick * len(SCALE_DATA_TYPES),
                            SCALE_DATA_TYPES, prefix=f"s{time.monotonic_ns()}")

    with ClusterJob(job_args(setup, parallelism)) as job:
        produce_records(setup.bootstrap, setup.topics["data"], bench.rows, len(SCALE_DATA_TYPES),
                        SCALE_DATA_TYPES, "warm")
        wait_for_results(setup, len(SCALE_DATA_TYPES), job, timeout_s=600)
        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        try:
            time.sleep(5)
            published_ms = time.time() * 1000
            cli.announce(setup.bootstrap, setup.topics["models"], v2)
            for data_type in SCALE_DATA_TYPES:
                setup.wait_for_event(pb.ModelEvent.AVAILABLE, data_type, 2, timeout_s=300)
            time.sleep(5)
        finally:
            stop.set()
            streamer.join()
        load = os.getloadavg()[0]
    first_v2: dict[str, float] = {}
    for r in committed_records(setup.bootstrap, setup.topics["scores"]):
        result = read_result(r.value)
        if result.model_version == 2:
            first_v2[result.data_type] = min(first_v2.get(result.data_type, r.timestamp), r.timestamp)
    owners = {e.data_type: e.subtask for e in setup.events(timeout_s=3)
              if e.state == pb.ModelEvent.AVAILABLE and e.model_version == 2}
    seconds = {t: (first_v2[t] - published_ms) / 1000 for t in SCALE_DATA_TYPES if t in first_v2}
    per_subtask = {str(s): max(seconds[t] for t in seconds if owners.get(t) == s) for s in set(owners.values())}
    out = {"parallelism": parallelism, "data_types_swapped": len(seconds), "load_avg_1m": load,
           "publish_to_first_v2_p50_s": float(np.median(list(seconds.values()))) if seconds else float("nan"),
           "publish_to_first_v2_worst_s": max(seconds.values(), default=float("nan")),
           "worst_per_subtask_s": per_subtask}
    log(f"scale swap p={parallelism}: {len(seconds)} of {len(SCALE_DATA_TYPES)} data types on v2; publish -> first v2 "
        f"result p50 {out['publish_to_first_v2_p50_s']:.2f}s, worst {out['publish_to_first_v2_worst_s']:.2f}s "
        f"(per subtask: {per_subtask})")
    return out


def section(bench: Bench, n: int) -> dict:
    start_cluster(bench)
    out: dict = {"taskmanagers": TASKMANAGERS, "records": n}
    for kind in ("pmml", "tf"):
        for parallelism in (1, 2, 4):
            found = throughput(bench, kind, parallelism, n)
            out[f"{kind}_p{parallelism}_rps"] = found["rps"]
            out[f"{kind}_p{parallelism}_load_avg_1m"] = found["load_avg_1m"]
        out[f"{kind}_p4_over_p1"] = out[f"{kind}_p4_rps"] / out[f"{kind}_p1_rps"]
    out["swap"] = swap(bench)
    out["taskmanagers_died_at_a_cancel"] = sum(TASKMANAGERS_REPLACED)
    return out
