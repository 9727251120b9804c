"""The model store's HTTP server, with faults to inject: per path prefix an HTTP status or
a delay before answering, or the whole server down (its port closed, then reopened)."""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

from model_store.server import ArtifactHandler


@dataclass(frozen=True)
class Fault:
    status: int = 0  # answer this HTTP status instead of the artifact (0: serve it)
    delay_s: float = 0.0  # wait this long before answering


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a delayed answer must not hold up a shutdown
    block_on_close = False
    allow_reuse_address = True
    store: FaultyStore

    def handle_error(self, request, client_address) -> None:
        """A client that gave up on a slow answer closed the connection: that is the point."""


class _Handler(ArtifactHandler):
    server: _Server

    def do_GET(self):  # noqa: N802 (http.server's naming)
        fault = self.server.store.observe(self.path)
        if fault.delay_s:
            time.sleep(fault.delay_s)
        if fault.status:
            self.send_response(fault.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


class FaultyStore:
    """Serves `root` read-only on 127.0.0.1 like `ModelStoreServer`; counts requests per path."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = Path(root)
        self.port = port
        self.requests: Counter[str] = Counter()
        self._faults: dict[str, Fault] = {}
        self._lock = threading.Lock()
        self._httpd: _Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultyStore:
        handler = functools.partial(_Handler, directory=str(self.root))
        self._httpd = _Server(("127.0.0.1", self.port), handler)
        self._httpd.store = self
        self.port = self._httpd.server_address[1]  # the same port again after a restart
        threading.Thread(target=self._httpd.serve_forever, daemon=True, name="store").start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def observe(self, path: str) -> Fault:
        """Count a request; the fault to apply to it."""
        with self._lock:
            self.requests[path] += 1
            return next((f for prefix, f in self._faults.items() if path.startswith(prefix)), Fault())

    def requests_under(self, prefix: str) -> int:
        with self._lock:
            return sum(n for path, n in self.requests.items() if path.startswith(prefix))

    @contextmanager
    def fault(self, prefix: str, fault: Fault) -> Iterator[None]:
        """Requests for paths under `prefix` get `fault` until the block ends."""
        with self._lock:
            self._faults[prefix] = fault
        try:
            yield
        finally:
            with self._lock:
                del self._faults[prefix]

    @contextmanager
    def down(self) -> Iterator[None]:
        """The store is unreachable (connection refused) until the block ends."""
        self.stop()
        try:
            yield
        finally:
            self.start()
