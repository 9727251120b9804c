"""The Flink standalone cluster shipped in the pip install's `pyflink/bin`, run with
FLINK_CONF_DIR=flink-conf/ (rendered from flink-conf/config.template.yaml).

    python -m infra.flink_cluster render      # write flink-conf/config.yaml
    python -m infra.flink_cluster start|stop|status
    python -m infra.flink_cluster run -- <args of `flink run`>
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from string import Template

from infra import paths
from infra.procs import ensure_port_free, port_is_open, stop_marked, wait_until
from jobs.jars import kafka_connector_jar

# Every process of this checkout's cluster carries this mark in its environment, and so do
# the Python workers its TaskManagers start: `stop` finds them even when a TaskManager died
# first and left its workers behind.
CLUSTER_MARK = "SCORING_FLINK_CLUSTER"
REST_PORT = 8081
RPC_PORT = 6123
START_TIMEOUT_S = 120


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def render_config(root: Path = paths.ROOT) -> Path:
    template = Template((paths.FLINK_CONF / "config.template.yaml").read_text())
    target = paths.FLINK_CONF / "config.yaml"
    text = template.substitute(ROOT=root)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return target


def flink_env() -> dict[str, str]:
    """Environment for pyflink/bin scripts: our conf dir, our venv's interpreter."""
    render_config()
    env = dict(os.environ)
    env["FLINK_CONF_DIR"] = str(paths.FLINK_CONF)
    env["FLINK_HOME"] = str(flink_home())
    env["PYFLINK_CLIENT_EXECUTABLE"] = str(paths.ROOT / ".venv" / "bin" / "python")
    env[CLUSTER_MARK] = str(paths.ROOT)
    (paths.RUN / "flink" / "log").mkdir(parents=True, exist_ok=True)
    return env


def _bin(script: str) -> str:
    return str(flink_home() / "bin" / script)


def rest(path: str, timeout_s: float = 5) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{REST_PORT}{path}", timeout=timeout_s) as r:
        return json.loads(r.read())


def taskmanagers_registered() -> int:
    try:
        return len(rest("/taskmanagers")["taskmanagers"])
    except (urllib.error.URLError, OSError, ValueError):
        return 0


def taskmanager_ids() -> set[str]:
    """The TaskManagers the JobManager knows, dead ones too until their heartbeat times out."""
    return {tm["id"] for tm in rest("/taskmanagers")["taskmanagers"]}


def taskmanager_pids() -> list[int]:
    """Live TaskManager processes of this cluster, from the pid file `taskmanager.sh` keeps."""
    pids = []
    for pid_file in (paths.RUN / "flink").glob("flink-*-taskexecutor.pid"):
        for line in pid_file.read_text().split():
            cmdline = Path(f"/proc/{line}/cmdline")
            if line.isdigit() and cmdline.exists() and b"TaskManagerRunner" in cmdline.read_bytes():
                pids.append(int(line))
    return pids


def forget_dead_taskmanagers() -> None:
    """Drop pids of killed TaskManagers from the pid file, so `stop` stops the live ones."""
    live = {str(p) for p in taskmanager_pids()}
    for pid_file in (paths.RUN / "flink").glob("flink-*-taskexecutor.pid"):
        kept = [line for line in pid_file.read_text().split() if line in live]
        if kept:
            pid_file.write_text("".join(f"{line}\n" for line in kept))
        else:
            pid_file.unlink()


def start_taskmanager() -> None:
    """One more TaskManager for the running cluster (`taskmanager.sh start`)."""
    subprocess.run([_bin("taskmanager.sh"), "start"], env=flink_env(), check=True,
                   stdout=subprocess.DEVNULL)


def job_state(job_id: str) -> str:
    return rest(f"/jobs/{job_id}")["state"]


def is_running() -> bool:
    return port_is_open(REST_PORT) and taskmanagers_registered() > 0


def start() -> bool:
    """Start the cluster; False if one was already running (then leave it to its owner)."""
    if is_running():
        print(f"Flink cluster already running: http://127.0.0.1:{REST_PORT}")
        return False
    ensure_port_free(REST_PORT, "Flink REST endpoint")
    ensure_port_free(RPC_PORT, "Flink JobManager RPC")
    subprocess.run([_bin("start-cluster.sh")], env=flink_env(), check=True,
                   stdout=subprocess.DEVNULL)
    logs = sorted((paths.RUN / "flink" / "log").glob("*.log"))
    try:
        wait_until(is_running, START_TIMEOUT_S, "Flink standalone cluster", logs=logs)
    except TimeoutError:
        stop()
        raise
    print(f"Flink cluster up: http://127.0.0.1:{REST_PORT}")
    return True


def stop() -> None:
    """Stop the cluster, then whatever of it is still running (orphaned Python workers)."""
    env = flink_env()
    subprocess.run([_bin("stop-cluster.sh")], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wait_until(lambda: not port_is_open(REST_PORT), 60, "Flink cluster shutdown")
    for killed in stop_marked(CLUSTER_MARK, str(paths.ROOT)):
        print(f"killed a process the cluster left behind: {killed}")


def flink_run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """`flink run ...` against the standalone cluster, with our conf and connector jar."""
    cmd = [_bin("flink"), "run", *args]
    return subprocess.run(cmd, env=flink_env(), **kwargs)


def submit_scoring_job(job_args: list[str]) -> str:
    """`flink run -d` the scoring job with the connector jar; returns the job id."""
    done = flink_run(["-d", "-py", str(paths.ROOT / "jobs" / "scoring_job.py"),
                      "-j", str(kafka_connector_jar()), *job_args],
                     capture_output=True, text=True, timeout=300)
    found = re.search(r"JobID ([0-9a-f]{32})", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"flink run failed:\n{(done.stdout + done.stderr)[-4000:]}")
    return found.group(1)


def cancel_job(job_id: str) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{REST_PORT}/jobs/{job_id}?mode=cancel", method="PATCH")
    urllib.request.urlopen(request, timeout=10).close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("command", choices=["render", "start", "stop", "status", "run"])
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of `flink run`")
    args = parser.parse_args(argv)
    if args.command == "render":
        print(render_config())
    elif args.command == "start":
        start()
    elif args.command == "stop":
        stop()
        print("Flink cluster stopped")
    elif args.command == "status":
        up = is_running()
        print(f"Flink cluster: {'running' if up else 'not running'}")
        return 0 if up else 1
    elif args.command == "run":
        return flink_run([a for a in args.rest if a != "--"]).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
