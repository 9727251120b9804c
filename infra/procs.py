"""Small helpers to start, wait for and stop local server processes."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def ensure_port_free(port: int, what: str) -> None:
    if port_is_open(port):
        raise RuntimeError(
            f"Port {port} on 127.0.0.1, wanted by the {what}, is already taken. "
            "Stop whatever listens there (`ss -ltnp | grep :%d`) or choose another port." % port
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def wait_until(
    ready: Callable[[], bool],
    timeout_s: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    logs: Iterable[Path] = (),
    interval_s: float = 0.5,
) -> None:
    """Poll `ready` until true; fail early if `alive` says the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if alive is not None and not alive():
            break
        time.sleep(interval_s)
    state = "died while starting" if alive is not None and not alive() else f"not ready after {timeout_s:.0f}s"
    tails = "\n".join(f"--- {p} ---\n{_tail(p)}" for p in logs if _tail(p))
    raise TimeoutError(f"{what}: {state}.\n{tails}".rstrip())


def stop_pid(pid: int, sig: int = signal.SIGTERM, grace_s: float = 20) -> None:
    """Signal a process (and its process group), escalate to SIGKILL after `grace_s`."""
    for target in (lambda s: os.killpg(pid, s), lambda s: os.kill(pid, s)):
        try:
            target(sig)
            break
        except (ProcessLookupError, PermissionError):
            continue
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.2)
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass


def pid_alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def marked_processes(mark: str, value: str) -> list[int]:
    """Live processes whose environment has `mark=value`: the ones a tool started with that
    mark, and everything they started in turn (environments are inherited), orphans too."""
    entry = f"{mark}={value}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            marked = entry in environ.read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        pid = int(environ.parent.name)
        if marked and pid != os.getpid() and alive(pid):
            found.append(pid)
    return sorted(found)


def describe_pid(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"{pid} (gone)"
    return f"{pid} " + " ".join(a.decode(errors="replace") for a in args if a)[:160]


def stop_marked(mark: str, value: str, grace_s: float = 10) -> list[str]:
    """Wait up to `grace_s` for the marked processes to end by themselves, then kill -9 the
    rest; returns what had to be killed."""
    deadline = time.monotonic() + grace_s
    while (left := marked_processes(mark, value)) and time.monotonic() < deadline:
        time.sleep(0.5)
    killed = [describe_pid(pid) for pid in left]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed
