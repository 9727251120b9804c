"""Generate contract/*_pb2.py from proto/contract/ with protoc from grpcio-tools (`make protos`).

Runs only when a .proto file is newer than its generated module."""

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"


def stale(proto: Path) -> bool:
    out = ROOT / proto.relative_to(PROTO_ROOT).with_name(proto.stem + "_pb2.py")
    return not out.exists() or out.stat().st_mtime < proto.stat().st_mtime


def main() -> int:
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    todo = [p for p in protos if stale(p)]
    for proto in todo:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={ROOT}",
            f"--pyi_out={ROOT}",
            str(proto),
        ]
        if protoc.main(args) != 0:
            print(f"protoc failed on {proto}", file=sys.stderr)
            return 1
        print(f"generated Python for {proto.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
