"""The Flink standalone cluster shipped in the pip install's `pyflink/bin`, run with
FLINK_CONF_DIR=flink-conf/ (rendered from flink-conf/config.template.yaml).

    python -m infra.flink_cluster render      # write flink-conf/config.yaml
    python -m infra.flink_cluster start [--taskmanagers 2] [--prometheus] | stop | status
    python -m infra.flink_cluster run -- <args of `flink run`>
    python -m infra.flink_cluster rescale --parallelism 4 [--job-id ID] -- <the job's args>
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
# Flink's Prometheus reporter on each TaskManager, the first free port of the range each.
# It has no bind-address option (2.2.1): it listens on every interface, so it is opt-in.
PROMETHEUS_PORTS = range(9249, 9260)
PROMETHEUS_REPORTER = {
    "metrics.reporter.prom.factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
    "metrics.reporter.prom.port": f"{PROMETHEUS_PORTS.start}-{PROMETHEUS_PORTS.stop - 1}",
}


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
    env["FLINK_PLUGINS_DIR"] = str(paths.ROOT / "lib" / "flink-plugins")
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


def _daemon_pids(kind: str, main_class: bytes) -> list[int]:
    """Live processes of this cluster from the pid file its daemon script keeps."""
    pids = []
    for pid_file in (paths.RUN / "flink").glob(f"flink-*-{kind}.pid"):
        for line in pid_file.read_text().split():
            cmdline = Path(f"/proc/{line}/cmdline")
            if line.isdigit() and cmdline.exists() and main_class in cmdline.read_bytes():
                pids.append(int(line))
    return pids


def taskmanager_pids() -> list[int]:
    """Live TaskManager processes of this cluster, from the pid file `taskmanager.sh` keeps."""
    return _daemon_pids("taskexecutor", b"TaskManagerRunner")


def jobmanager_pids() -> list[int]:
    return _daemon_pids("standalonesession", b"StandaloneSessionClusterEntrypoint")


def start_jobmanager(timeout_s: float = START_TIMEOUT_S) -> None:
    """A JobManager again, after one died; the TaskManagers still running register with it."""
    subprocess.run([_bin("jobmanager.sh"), "start"], env=flink_env(), check=True, stdout=subprocess.DEVNULL)
    wait_until(lambda: port_is_open(REST_PORT), timeout_s, "the JobManager's REST endpoint")


def forget_dead_taskmanagers() -> None:
    """Drop pids of killed TaskManagers from the pid file, so `stop` stops the live ones."""
    live = {str(p) for p in taskmanager_pids()}
    for pid_file in (paths.RUN / "flink").glob("flink-*-taskexecutor.pid"):
        kept = [line for line in pid_file.read_text().split() if line in live]
        if kept:
            pid_file.write_text("".join(f"{line}\n" for line in kept))
        else:
            pid_file.unlink()


def start_taskmanager(prometheus: bool = False) -> None:
    """One more TaskManager for the running cluster (`taskmanager.sh start`), reporting to
    Prometheus if asked (dynamic properties: the shared config file stays as it is)."""
    dynamic = [f"-D{key}={value}" for key, value in PROMETHEUS_REPORTER.items()] if prometheus else []
    subprocess.run([_bin("taskmanager.sh"), "start", *dynamic], env=flink_env(), check=True,
                   stdout=subprocess.DEVNULL)


def ensure_taskmanagers(count: int, prometheus: bool = False, timeout_s: float = 180) -> int:
    """Start TaskManagers until at least `count` are running, and wait until the JobManager
    lists just the live ones (a dead one leaves its list at the heartbeat timeout); returns
    how many were started. Needed between jobs: cancelling a PyFlink job can take its
    TaskManager down (README, "Known limits")."""
    forget_dead_taskmanagers()
    missing = max(0, count - len(taskmanager_pids()))
    for _ in range(missing):
        start_taskmanager(prometheus)
    wait_until(lambda: len(taskmanager_pids()) >= count and taskmanagers_registered() == len(taskmanager_pids()),
               timeout_s, f"{count} live TaskManager(s), and only live ones registered", interval_s=1)
    return missing


def prometheus_samples(name_contains: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of the samples whose name contains `name_contains`, scraped
    from every TaskManager's Prometheus reporter on this host (`start(prometheus=True)`)."""
    from prometheus_client.parser import text_string_to_metric_families

    found = []
    for port in (p for p in PROMETHEUS_PORTS if port_is_open(p)):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        found += [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
                  for s in family.samples if name_contains in s.name]
    return found


def job_state(job_id: str) -> str:
    return rest(f"/jobs/{job_id}")["state"]


def is_running() -> bool:
    return port_is_open(REST_PORT) and taskmanagers_registered() > 0


def start(taskmanagers: int = 1, prometheus: bool = False) -> bool:
    """Start the cluster: a JobManager and `taskmanagers` TaskManagers of two slots each;
    False if one was already running (then leave it to its owner, with TaskManagers started
    to make `taskmanagers`, should some have died)."""
    if is_running():
        started = ensure_taskmanagers(taskmanagers, prometheus)
        print(f"Flink cluster already running: http://127.0.0.1:{REST_PORT}"
              + (f"; started {started} TaskManager(s) to make {taskmanagers}" if started else ""))
        return False
    ensure_port_free(REST_PORT, "Flink REST endpoint")
    ensure_port_free(RPC_PORT, "Flink JobManager RPC")
    subprocess.run([_bin("jobmanager.sh"), "start"], env=flink_env(), check=True, stdout=subprocess.DEVNULL)
    for _ in range(taskmanagers):
        start_taskmanager(prometheus)
    logs = sorted((paths.RUN / "flink" / "log").glob("*.log"))
    try:
        wait_until(lambda: is_running() and taskmanagers_registered() >= taskmanagers, START_TIMEOUT_S,
                   f"Flink standalone cluster with {taskmanagers} TaskManager(s)", logs=logs)
    except TimeoutError:
        stop()
        raise
    print(f"Flink cluster up: http://127.0.0.1:{REST_PORT}, {taskmanagers} TaskManager(s)"
          + (f", Prometheus metrics on ports {PROMETHEUS_REPORTER['metrics.reporter.prom.port']}" if prometheus else ""))
    return True


def stop() -> None:
    """Stop the cluster, then whatever of it is still running (orphaned Python workers)."""
    env = flink_env()
    for script, command in (("taskmanager.sh", "stop-all"), ("jobmanager.sh", "stop")):
        subprocess.run([_bin(script), command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def _post(path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{REST_PORT}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def stop_with_savepoint(job_id: str, directory: str, timeout_s: float = 300) -> str:
    """Stop the job with a savepoint in `directory` (a URI); returns the savepoint's path."""
    trigger = _post(f"/jobs/{job_id}/stop", {"targetDirectory": directory, "drain": False})["request-id"]
    done: dict = {}

    def finished() -> bool:
        done.update(rest(f"/jobs/{job_id}/savepoints/{trigger}"))
        return done["status"]["id"] == "COMPLETED"

    wait_until(finished, timeout_s, f"the savepoint of job {job_id}", interval_s=1)
    operation = done.get("operation", {})
    if "location" not in operation:
        raise RuntimeError(f"stopping job {job_id} with a savepoint failed: {operation.get('failure-cause')}")
    return operation["location"]


def rescale(job_id: str, parallelism: int, job_args: list[str], savepoint_dir: str) -> tuple[str, str]:
    """Stop the scoring job with a savepoint and submit it again from there at `parallelism`,
    with the same job arguments. Returns the new job's id and the savepoint's path."""
    savepoint = stop_with_savepoint(job_id, savepoint_dir)
    new_id = submit_scoring_job([*job_args, "--parallelism", str(parallelism), "--restore-from", savepoint])
    return new_id, savepoint


def cancel_job(job_id: str) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{REST_PORT}/jobs/{job_id}?mode=cancel", method="PATCH")
    urllib.request.urlopen(request, timeout=10).close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("command", choices=["render", "start", "stop", "status", "run", "rescale"])
    parser.add_argument("--taskmanagers", type=int, default=1, help="start: how many TaskManagers (2 slots each)")
    parser.add_argument("--prometheus", action="store_true",
                        help=f"start: TaskManagers serve Prometheus metrics on ports {PROMETHEUS_REPORTER['metrics.reporter.prom.port']}")
    parser.add_argument("--job-id", default="", help="rescale: the running job (default: the only one running)")
    parser.add_argument("--parallelism", type=int, default=0, help="rescale: the new parallelism")
    parser.add_argument("--savepoint-dir", default=(paths.RUN / "flink" / "savepoints").as_uri(),
                        help="rescale: where the savepoint goes")
    argv = sys.argv[1:] if argv is None else argv
    ours, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parser.parse_args(ours)
    if args.command == "render":
        print(render_config())
    elif args.command == "start":
        start(args.taskmanagers, args.prometheus)
    elif args.command == "stop":
        stop()
        print("Flink cluster stopped")
    elif args.command == "status":
        up = is_running()
        print(f"Flink cluster: {'running' if up else 'not running'}")
        return 0 if up else 1
    elif args.command == "run":
        return flink_run(rest).returncode
    elif args.command == "rescale":
        running = [j["id"] for j in rest("/jobs")["jobs"] if j["status"] == "RUNNING"]
        job_id = args.job_id or (running[0] if len(running) == 1 else "")
        if not job_id or args.parallelism < 1:
            print(f"error: rescale needs --parallelism and --job-id (running: {running})", file=sys.stderr)
            return 2
        new_id, savepoint = rescale(job_id, args.parallelism, rest, args.savepoint_dir)
        print(f"job {job_id} stopped with savepoint {savepoint}; running again at parallelism "
              f"{args.parallelism} as {new_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
