"""Where a Python worker's time goes: the scoring job under load, sampled with py-spy.

Runs one throughput case (the real job on a local MiniCluster, real broker, real store),
waits until every model serves, then samples every Python worker of the job for
`--seconds` and writes, per case, the folded stacks and a summary of the functions that
take the most time (self and inclusive) to bench/results/profile-<kind>.txt.

    python -m bench.profile --kind pmml [--records 100000] [--seconds 20] [--batch-size 64]
    python -m bench.profile --kind many [--models 1000]   # 1,000 data types, a small model each
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from bench.run import (
    JOB_MODULES,
    RESULTS,
    Bench,
    end_offset,
    group_processes,
    log,
    produce_fast,
    produce_records,
    publish_small_models,
    read_all,
    small_rows,
    wait_for_results,
)
from contract import scoring_pb2 as pb
from infra.job_harness import RunningJob
from scoring.options import ScoringOptions

PY_SPY = Path(sys.executable).with_name("py-spy")


def python_workers(pgid: int) -> list[int]:
    """The job's Python processes. On a MiniCluster PyFlink runs the Python functions in the
    driver itself ("loopback") unless _python_worker_execution_mode=process is set."""
    return [pid for pid, exe in group_processes(pgid) if "python" in os.path.basename(exe)]


def jvm_of(pgid: int) -> int:
    return next(pid for pid, exe in group_processes(pgid) if exe.endswith("java"))


def sample(workers: list[int], jvm: int, seconds: int, folder: Path) -> list[Path]:
    """py-spy every Python worker (non-blocking: not paused to sample) and JFR the JVM, at once."""
    procs, outputs = [], []
    for pid in workers:
        out = folder / f"python-worker-{pid}.folded"
        outputs.append(out)
        procs.append(subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
             "--nonblocking", "--threads", "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    recording = folder / "jvm.jfr"
    subprocess.run(["jcmd", str(jvm), "JFR.start", "settings=profile", f"duration={seconds}s",
                    f"filename={recording}"], check=True, stdout=subprocess.DEVNULL)
    for p in procs:
        p.wait(timeout=seconds + 60)
    time.sleep(3)  # JFR writes its file when the duration is over
    outputs.append(jfr_to_folded(recording, folder / f"jvm-{jvm}.folded"))
    return [o for o in outputs if o.exists()]


def jfr_to_folded(recording: Path, out: Path) -> Path:
    """JFR execution samples as folded stacks (root first), the format py-spy writes."""
    done = subprocess.run(["jfr", "print", "--json", "--stack-depth", "64", "--events",
                           "jdk.ExecutionSample", str(recording)], capture_output=True, text=True, check=True)
    stacks = collections.Counter()
    for event in json.loads(done.stdout)["recording"]["events"]:
        frames = event["values"]["stackTrace"]["frames"]
        names = [f"{f['method']['type']['name'].rsplit('.', 1)[-1]}.{f['method']['name']} "
                 f"({f['method']['type']['name'].rsplit('.', 1)[0]})" for f in reversed(frames)]
        thread = event["values"]["sampledThread"]["javaName"] or "?"
        stacks[";".join([f"thread {thread.split(' (')[0][:60]}", *names])] += 1
    out.write_text("".join(f"{s} {n}\n" for s, n in stacks.items()))
    return out


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds each process has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def frame_name(frame: str) -> str:
    """`process_element (scoring/operators.py:123)` -> `process_element (scoring/operators.py)`."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        path = path.split(marker, 1)[-1]
    return f"{name} ({path})"


def summarize(folded: Path, top: int = 30) -> str:
    own, inclusive, threads, total = collections.Counter(), collections.Counter(), collections.Counter(), 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        threads[next((f for f in stack.split(";") if f.startswith("thread ")), "thread ?")] += int(count)
        frames = [frame_name(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        n = int(count)
        total += n
        if frames:
            own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    if not total:
        return f"{folded.name}: no samples\n"
    lines = [f"{folded.name}: {total} samples", "", "   %     thread"]
    lines += [f"{100 * n / total:6.1f}   {t[7:]}" for t, n in threads.most_common(8)]
    lines += ["", "self %   function"]
    lines += [f"{100 * n / total:6.1f}   {f}" for f, n in own.most_common(top)]
    lines += ["", "incl %   function"]
    lines += [f"{100 * n / total:6.1f}   {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kind", choices=["passthrough", "pmml", "tf", "many"], default="pmml")
    p.add_argument("--models", type=int, default=1000, help="--kind many: data types, one model each")
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=ScoringOptions().batch_size, help="the job's default")
    args = p.parse_args(argv)
    with ExitStack() as stack:
        bench = Bench(stack, 1000 if args.kind == "many" else args.records)
        extra: dict = {"batch_size": args.batch_size}
        if args.kind == "many":  # as bench.run's many-models case: every record another data type
            setup = bench.setup()
            data_types = publish_small_models(setup, args.models)
            produce_records(setup.bootstrap, setup.topics["data"], small_rows(bench), args.records, data_types)
            extra["model_cache_size"] = args.models + 100
        else:
            setup = bench.setup()
            bench.publish(setup, "pmml" if args.kind == "passthrough" else args.kind, bench.data_types)
            produce_fast(setup.bootstrap, setup.topics["data"], bench.measured(args.records))
        job_args = setup.job_args(delivery="at-least-once", max_held_records=10**7, **extra)
        with RunningJob(job_args, setup.workdir / "job.log", module=JOB_MODULES.get(args.kind, "jobs.scoring_job")) as job:
            wait_for_results(setup, 5_000, job, timeout_s=300)  # models serve, the backlog flows
            workers, jvm = python_workers(job.proc.pid), jvm_of(job.proc.pid)
            log(f"sampling Python workers {workers} and JVM {jvm} for {args.seconds}s ...")
            cpu = cpu_seconds([jvm, *workers])
            scored = end_offset(setup.bootstrap, setup.topics["scores"])
            folded = sample(workers, jvm, args.seconds, setup.workdir)
            scored = end_offset(setup.bootstrap, setup.topics["scores"]) - scored
            cpu = {pid: (after - cpu[pid]) / args.seconds for pid, after in cpu_seconds(list(cpu)).items()}
        events = read_all(setup.bootstrap, setup.topics["model-events"], pb.ModelEvent.FromString)
        log(f"{sum(e.state == pb.ModelEvent.AVAILABLE for e in events)} models were serving")
    report = f"Scored while sampled: {scored:,} records ({scored / args.seconds:,.0f}/s)\n"
    report += "CPU used while sampled (cores): " + ", ".join(
        f"{'JVM' if pid == jvm else 'Python worker'} {pid}: {c:.2f}" for pid, c in cpu.items()) + "\n\n"
    report += "\n".join(summarize(f) for f in folded)
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"profile-{args.kind}.txt"
    target.write_text(f"# py-spy of the scoring job's Python workers, kind={args.kind}, "
                      f"batch size {extra['batch_size']}, {args.seconds}s at {time.strftime('%Y-%m-%d %H:%M')}\n\n"
                      + report)
    print(report)
    log(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
