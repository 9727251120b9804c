"""model-store: publish models, list versions, roll back, send sample data.

    model-store publish --name wine --data-type wine --type pmml --path model.pmml
    model-store list [--name wine]
    model-store rollback --name wine --version 1
    model-store send --data-type wine --samples .run/samples/wine-pmml/samples.json --count 1000
    model-store status
    model-store tail scores|dead-letters|events [--from-beginning] [--data-type wine] [--json]

A publish copies the model into the versioned store and announces it on the models
topic: inline when it is small, otherwise by its location on the store's HTTP server, or
in an S3 bucket (`--base-url s3://bucket/prefix`, uploaded there first).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from contract import scoring_pb2 as pb
from contract.topics import TopicNames
from contract.values import make_record
from model_store import object_store, tail
from model_store.kafka_io import check_models_topic, consume, produce, produce_keyed
from model_store.repository import ModelRepository, StoredModel
from model_store.server import DEFAULT_PORT, DEFAULT_ROOT
from model_store.status import fold, render

TYPES = {"pmml": pb.PMML, "tensorflow": pb.TENSORFLOW_SAVED_MODEL}
DEFAULT_INLINE_MAX = 256 * 1024


def descriptor_for(repo: ModelRepository, stored: StoredModel, base_url: str,
                   inline_max_bytes: int, action: int = pb.ModelDescriptor.DEPLOY,
                   signature_name: str = "") -> pb.ModelDescriptor:
    d = pb.ModelDescriptor(
        name=stored.name, description=stored.description, data_type=stored.data_type,
        model_type=stored.model_type_value, version=stored.version, sha256=stored.sha256,
        size_bytes=stored.size_bytes, publish_time_ms=int(time.time() * 1000), action=action,
        signature_name=signature_name,
    )
    if stored.size_bytes <= inline_max_bytes:
        d.inline_bytes = repo.artifact_path(stored).read_bytes()
    else:
        d.location = f"{base_url.rstrip('/')}/{stored.name}/{stored.version}/{stored.file}"
    return d


def upload_if_remote(repo: ModelRepository, stored: StoredModel, d: pb.ModelDescriptor) -> None:
    """A descriptor that points into an object store needs its artifact there first."""
    if d.WhichOneof("artifact") == "location" and object_store.is_object_url(d.location):
        object_store.upload(repo.artifact_path(stored), d.location)


def announce(bootstrap: str, topic: str, descriptors: Iterable[pb.ModelDescriptor]) -> int:
    """Descriptors onto the models topic, each keyed by its data type: the topic is compacted,
    and the latest message of every data type is the one it keeps."""
    return produce_keyed(bootstrap, topic, ((d.data_type.encode(), d.SerializeToString()) for d in descriptors))


def warn_unless_compacted(bootstrap: str, topic: str) -> None:
    problem = check_models_topic(bootstrap, topic)
    if problem:
        print(f"warning: {problem}. See the README, 'The models topic'.", file=sys.stderr)


def cmd_publish(args, repo: ModelRepository) -> int:
    stored = repo.publish(args.name, args.path, TYPES[args.type], args.data_type, args.description)
    d = descriptor_for(repo, stored, args.base_url, args.inline_max_bytes,
                       signature_name=args.signature_name)
    upload_if_remote(repo, stored, d)
    announce(args.bootstrap_servers, args.topic, [d])
    warn_unless_compacted(args.bootstrap_servers, args.topic)
    how = "inline" if d.WhichOneof("artifact") == "inline_bytes" else d.location
    print(f"published {stored.name} v{stored.version} ({stored.model_type}, {stored.size_bytes} bytes, "
          f"for data type '{stored.data_type}') -> {args.topic} [{how}]")
    return 0


def cmd_list(args, repo: ModelRepository) -> int:
    names = [args.name] if args.name else repo.names()
    for name in names:
        for m in repo.versions(name):
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.created_ms / 1000))
            print(f"{m.name}\tv{m.version}\t{m.model_type}\t{m.data_type}\t{m.size_bytes}\t{created}\t{m.sha256[:12]}")
    return 0


def cmd_rollback(args, repo: ModelRepository) -> int:
    stored = repo.get(args.name, args.version)
    d = descriptor_for(repo, stored, args.base_url, args.inline_max_bytes,
                       action=pb.ModelDescriptor.ROLLBACK, signature_name=args.signature_name)
    upload_if_remote(repo, stored, d)
    announce(args.bootstrap_servers, args.topic, [d])
    warn_unless_compacted(args.bootstrap_servers, args.topic)
    print(f"rollback of '{stored.data_type}' to {stored.name} v{stored.version} sent to {args.topic}")
    return 0


def cmd_send(args, repo: ModelRepository) -> int:
    rows = json.loads(Path(args.samples).read_text())["inputs"]
    prefix = args.id_prefix or f"{args.data_type}-{int(time.time())}"
    records = (
        make_record(f"{prefix}-{i}", args.data_type, row, int(time.time() * 1000))
        for i, row in zip(range(args.count), itertools.cycle(rows))
    )
    n = produce(args.bootstrap_servers, args.data_topic, (r.SerializeToString() for r in records))
    print(f"sent {n} '{args.data_type}' records to {args.data_topic}")
    return 0


def cmd_tail(args, repo: ModelRepository) -> int:
    topics = TopicNames.from_env()
    topic = args.topic or {"scores": topics.scores, "dead-letters": topics.dead_letters,
                           "events": topics.model_events}[args.what]
    return tail.tail(args.bootstrap_servers, topic, args.what, args.from_beginning, args.data_type,
                     args.json, args.max)


def cmd_status(args, repo: ModelRepository) -> int:
    events = [pb.ModelEvent.FromString(v)
              for v in consume(args.bootstrap_servers, args.events_topic, timeout_s=args.timeout)]
    print(render(fold(events)))
    return 0


def parser() -> argparse.ArgumentParser:
    topics = TopicNames.from_env()
    p = argparse.ArgumentParser(prog="model-store", description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store-root", type=Path, default=Path(os.environ.get("MODEL_STORE_ROOT", DEFAULT_ROOT)))
    p.add_argument("--bootstrap-servers", default=os.environ.get("BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    sub = p.add_subparsers(dest="command", required=True)

    def announcing(sp):
        sp.add_argument("--topic", default=topics.models, help="models topic")
        sp.add_argument("--base-url", default=os.environ.get(
            "MODEL_STORE_URL", f"http://127.0.0.1:{DEFAULT_PORT}"),
            help="where jobs fetch artifacts: the store's HTTP server, or s3://bucket/prefix "
                 "(the artifact is uploaded there first)")
        sp.add_argument("--inline-max-bytes", type=int, default=DEFAULT_INLINE_MAX,
                        help="send artifacts up to this size inline (default 256 KiB)")
        sp.add_argument("--signature-name", default="", help="TensorFlow signature (default serving_default)")

    pub = sub.add_parser("publish", help="store a model as its next version and announce it")
    pub.add_argument("--name", required=True)
    pub.add_argument("--data-type", required=True, help="the records this model scores")
    pub.add_argument("--type", choices=sorted(TYPES), required=True)
    pub.add_argument("--path", type=Path, required=True, help="a PMML file or a SavedModel directory")
    pub.add_argument("--description", default="")
    announcing(pub)

    ls = sub.add_parser("list", help="list stored versions")
    ls.add_argument("--name")

    rb = sub.add_parser("rollback", help="serve an earlier stored version again")
    rb.add_argument("--name", required=True)
    rb.add_argument("--version", type=int, required=True)
    announcing(rb)

    send = sub.add_parser("send", help="send sample data records")
    send.add_argument("--data-type", required=True)
    send.add_argument("--samples", type=Path, required=True, help="a samples.json of `make models`")
    send.add_argument("--count", type=int, default=100)
    send.add_argument("--id-prefix", default="")
    send.add_argument("--data-topic", default=topics.data)

    tl = sub.add_parser("tail", help="follow the scores, dead letters or model events, a line each")
    tl.add_argument("what", choices=sorted(tail.KINDS))
    tl.add_argument("--from-beginning", action="store_true", help="the whole topic, not only what comes now")
    tl.add_argument("--data-type", default="", help="only this data type's messages")
    tl.add_argument("--json", action="store_true", help="one JSON object per line, for machines")
    tl.add_argument("--max", type=int, default=0, help="stop after this many (default: until Ctrl-C)")
    tl.add_argument("--topic", default="", help="the topic (default: the job's, $TOPIC_SCORES, ...)")

    st = sub.add_parser("status", help="the model each data type is served by, with its counters")
    st.add_argument("--events-topic", default=topics.model_events)
    st.add_argument("--timeout", type=float, default=5, help="seconds to read the events topic")
    return p


COMMANDS = {"publish": cmd_publish, "list": cmd_list, "rollback": cmd_rollback, "send": cmd_send,
            "status": cmd_status, "tail": cmd_tail}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, ModelRepository(args.store_root))
    except (KeyError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
