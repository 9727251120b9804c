"""The remote-call baseline the seeds argue against: a model server over HTTP, one call per record.

    python -m bench.remote_model --samples .run/samples/wine-tf --port 8501   # the server

`RemoteHttpBackend` is the job side: a backend whose "artifact" is a small JSON file
naming the server, registered for the benchmark with SCORING_EXTRA_BACKENDS.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from scoring.backends.base import InputField, LoadedModel, ModelBackend, Outputs

REMOTE_TYPE = 99


class RemoteModel(LoadedModel):
    def __init__(self, url: str, inputs: list[str]) -> None:
        import requests

        self.url = url
        self.session = requests.Session()
        self.input_fields = {n: InputField(n, "float") for n in inputs}

    def predict(self, batch: Sequence[dict[str, Any]]) -> list[Outputs]:
        outputs = []
        for record in batch:  # one HTTP call per record, as a remote model server is used
            reply = self.session.post(self.url, json=record, timeout=10)
            reply.raise_for_status()
            outputs.append({k: np.asarray(v, dtype=np.float32) if isinstance(v, list) else v
                            for k, v in reply.json().items()})
        return outputs

    def warm_up_inputs(self) -> list[dict[str, Any]]:
        return [{n: 0.0 for n in self.input_fields}]

    def release(self) -> None:
        self.session.close()


class RemoteHttpBackend(ModelBackend):
    def load(self, artifact: Path, signature_name: str = "") -> LoadedModel:
        spec = json.loads(artifact.read_text())
        return RemoteModel(spec["url"], spec["inputs"])


def serve(saved_model: Path, port: int) -> None:
    from model_store.repository import pack_saved_model
    from scoring.backends.tensorflow import TensorFlowBackend

    packed = Path(f"/tmp/remote-model-{port}.tar.gz")
    pack_saved_model(saved_model, packed)
    model = TensorFlowBackend().load(packed)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real client would use
        disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms to every call

        def do_POST(self):  # noqa: N802
            record = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            outputs = model.predict([model.prepare(record)])[0]
            body = json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v)
                               for k, v in outputs.items()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"model server on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--saved-model", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    serve(args.saved_model, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
