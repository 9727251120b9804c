"""The model store's HTTP server in the background, its pid in the store's root.

    python -m infra.store_service start|stop    (make store-up / make store-down)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from infra.procs import ensure_port_free, port_is_open, stop_pid, wait_until
from model_store.server import DEFAULT_PORT, DEFAULT_ROOT


def _pid_file(root: Path) -> Path:
    return root / ".server.pid"


def start_background(root: Path, port: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if port_is_open(port):
        ensure_port_free(port, "model store")
    log = open(root / ".server.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "model_store.server", "--root", str(root), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    _pid_file(root).write_text(str(proc.pid))
    wait_until(lambda: port_is_open(port), 30, f"model store on port {port}",
               alive=lambda: proc.poll() is None, logs=[root / ".server.log"])
    print(f"model store serving {root} at http://127.0.0.1:{port}")


def stop_background(root: Path) -> None:
    try:
        stop_pid(int(_pid_file(root).read_text()), signal.SIGTERM, grace_s=10)
    except (FileNotFoundError, ValueError):
        pass
    _pid_file(root).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("MODEL_STORE_ROOT", DEFAULT_ROOT)))
    parser.add_argument("--port", type=int, default=int(os.environ.get("MODEL_STORE_PORT", DEFAULT_PORT)))
    args = parser.parse_args(argv)
    if args.command == "start":
        start_background(args.root, args.port)
    else:
        stop_background(args.root)
        print("model store stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
