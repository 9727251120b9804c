"""Serves a model repository read-only over HTTP, on 127.0.0.1.

    python -m model_store.server --root .run/model-store --port 8765
    (in the background: `make store-up`, `infra/store_service.py`)

GET /<name>/<version>/<file> returns an artifact; GET /healthz answers "ok".
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
import urllib.parse
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEFAULT_PORT = 8765
# The checkout's runtime folder (.run/, beside infra's broker and cluster data).
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".run" / "model-store"


class ArtifactHandler(SimpleHTTPRequestHandler):
    """Files only: no directory listings, no hidden files, GET and HEAD only."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/healthz":
            body = b"ok\n"
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def send_head(self):
        local = Path(self.translate_path(self.path))
        # The decoded path, as translate_path serves it: "/%2e..." is a hidden name too.
        decoded = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if local.is_dir() or any(part.startswith(".") for part in Path(decoded).parts):
            self.send_error(HTTPStatus.NOT_FOUND, "no such artifact")
            return None
        return super().send_head()

    def log_message(self, format, *args):  # noqa: A002
        if os.environ.get("MODEL_STORE_ACCESS_LOG"):
            super().log_message(format, *args)


class ModelStoreServer:
    """The HTTP server in a thread of this process (tests, benchmarks)."""

    def __init__(self, root: Path, port: int = 0) -> None:
        handler = functools.partial(ArtifactHandler, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ModelStoreServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("MODEL_STORE_ROOT", DEFAULT_ROOT)))
    parser.add_argument("--port", type=int, default=int(os.environ.get("MODEL_STORE_PORT", DEFAULT_PORT)))
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    server = ModelStoreServer(args.root, args.port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.httpd.shutdown).start())
    print(f"serving {args.root} at {server.base_url}", flush=True)
    server.httpd.serve_forever()
    server.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
