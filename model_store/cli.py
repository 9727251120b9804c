"""model-store: publish models, list versions, roll back, send sample data.

    model-store publish --name wine --data-type wine --type pmml --path model.pmml
    model-store list [--name wine]
    model-store rollback --name wine --version 1
    model-store publish ... --shadow [--sample 0.2] | --canary 10 [gate options]
    model-store promote|abort --name wine --version 2
    model-store send --data-type wine --samples .run/samples/wine-pmml/samples.json --count 1000
    model-store status
    model-store tail scores|dead-letters|events [--from-beginning] [--data-type wine] [--json]

A publish copies the model into the versioned store and announces it on the models
topic: inline when it is small, otherwise by its location on the store's HTTP server, or
in an S3 bucket (`--base-url s3://bucket/prefix`, uploaded there first).

With --shadow or --canary the new version does not replace the current one when loaded: it
scores beside it until its gate decides (README, "Safe rollouts"). `promote` ends a rollout
now; `abort` ends it by sending a ROLLBACK to the version serving (read from the events).
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

from kafka.errors import KafkaError

from contract import scoring_pb2 as pb
from contract import signing
from contract.json_records import record_as_json
from contract.model_types import BY_NAME
from contract.rollout import describe_policy, policy_problem
from contract.topics import TopicNames
from contract.values import make_record
from model_store import explain, object_store, tail
from model_store.kafka_config import KafkaClientConfig
from model_store.kafka_io import (
    Kafka,
    check_models_topic,
    consume,
    kafka_problem,
    produce,
    produce_keyed,
)
from model_store.repository import ModelRepository, StoredModel
from model_store.server import DEFAULT_PORT, DEFAULT_ROOT
from model_store.status import fold, render

DEFAULT_INLINE_MAX = 256 * 1024


_last_sequence = 0


def next_sequence() -> int:
    """The time in microseconds, and always more than this process gave before. A job with
    trusted keys refuses a sequence not above the last it accepted for the data type, so
    publishers whose clocks lag the last one's by more than the gap are refused (saying so)."""
    global _last_sequence
    _last_sequence = max(time.time_ns() // 1000, _last_sequence + 1)
    return _last_sequence


def descriptor_for(repo: ModelRepository, stored: StoredModel, base_url: str,
                   inline_max_bytes: int, action: int = pb.ModelDescriptor.DEPLOY,
                   signature_name: str = "", rollout: pb.RolloutPolicy | None = None,
                   explain_fraction: float = 0.0) -> pb.ModelDescriptor:
    """The descriptor announcing a stored version, unsigned (`signing.sign` it last)."""
    d = pb.ModelDescriptor(
        name=stored.name, description=stored.description, data_type=stored.data_type,
        model_type=stored.model_type_value, version=stored.version, sha256=stored.sha256,
        size_bytes=stored.size_bytes, publish_time_ms=int(time.time() * 1000), action=action,
        signature_name=signature_name, rollout=rollout, explain_fraction=explain_fraction,
        sequence=next_sequence(),
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


def announce(kafka: Kafka, topic: str, descriptors: Iterable[pb.ModelDescriptor]) -> int:
    """Descriptors onto the models topic, each keyed by its data type: the topic is compacted,
    and the latest message of every data type is the one it keeps."""
    return produce_keyed(kafka, topic, ((d.data_type.encode(), d.SerializeToString()) for d in descriptors))


def warn_unless_compacted(kafka: Kafka, topic: str) -> None:
    problem = check_models_topic(kafka, topic)
    if problem:
        print(f"warning: {problem}. See the README, 'The models topic'.", file=sys.stderr)


# Gate defaults of a SHADOW or CANARY publish; an IMMEDIATE one checks only what is asked.
GATE_DEFAULTS = {"min_records": 1000, "min_agreement": 0.99, "tolerance": 1e-6, "max_error_rate": 0.01,
                 "watch_s": 300.0}


def rollout_policy(args) -> pb.RolloutPolicy:
    """The RolloutPolicy of a publish's flags; raises ValueError for one that cannot run."""
    mode = (pb.RolloutPolicy.SHADOW if args.shadow else
            pb.RolloutPolicy.CANARY if args.canary is not None else pb.RolloutPolicy.IMMEDIATE)
    given = {k: getattr(args, k) for k in ("min_records", "max_duration_s", "min_agreement", "tolerance",
                                             "max_error_rate", "max_latency_ratio", "watch_s")}
    if mode != pb.RolloutPolicy.IMMEDIATE:
        given = {k: GATE_DEFAULTS.get(k) if v is None else v for k, v in given.items()}
    g = {k: v or 0 for k, v in given.items()}
    policy = pb.RolloutPolicy(
        mode=mode, sample=args.sample or 0, canary_percent=args.canary or 0, entity_field=args.entity_field,
        send_pairs=args.send_pairs,
        gate=pb.Gate(min_records=int(g["min_records"]), max_duration_ms=int(g["max_duration_s"] * 1000),
                     min_agreement=g["min_agreement"], tolerance=g["tolerance"],
                     max_error_rate=g["max_error_rate"], max_latency_ratio=g["max_latency_ratio"],
                     manual_promotion=args.manual_promotion, watch_ms=int(g["watch_s"] * 1000)))
    problem = policy_problem(policy)
    if problem:
        raise ValueError(f"the rollout cannot run: {problem}")
    return policy


def cmd_publish(args, repo: ModelRepository) -> int:
    policy = rollout_policy(args)
    stored = repo.publish(args.name, args.path, BY_NAME[args.type], args.data_type, args.description)
    d = descriptor_for(repo, stored, args.base_url, args.inline_max_bytes,
                       signature_name=args.signature_name, rollout=policy, explain_fraction=args.explain_fraction)
    sign_if_asked(args, d)
    upload_if_remote(repo, stored, d)
    announce(args.kafka, args.topic, [d])
    warn_unless_compacted(args.kafka, args.topic)
    how = "inline" if d.WhichOneof("artifact") == "inline_bytes" else d.location
    how += f", signed by key {d.signing_key_id[:16]}..." if d.signature else ""
    print(f"published {stored.name} v{stored.version} ({stored.model_type}, {stored.size_bytes} bytes, "
          f"for data type '{stored.data_type}') -> {args.topic} [{how}]")
    if policy.mode != pb.RolloutPolicy.IMMEDIATE:
        print(f"rollout: {describe_policy(policy)}")
    return 0


def sign_if_asked(args, d: pb.ModelDescriptor) -> None:
    """Every announcement is a statement of its own: a ROLLBACK or PROMOTE is signed like a
    publish, with its own sequence (a job with trusted keys refuses it unsigned)."""
    if args.signing_key:
        signing.sign(d, signing.load_private_key(args.signing_key))


def announce_stored(args, repo: ModelRepository, action: int) -> StoredModel:
    """A stored version announced again with `action` (ROLLBACK or PROMOTE)."""
    stored = repo.get(args.name, args.version)
    d = descriptor_for(repo, stored, args.base_url, args.inline_max_bytes,
                       action=action, signature_name=args.signature_name)
    sign_if_asked(args, d)
    upload_if_remote(repo, stored, d)
    announce(args.kafka, args.topic, [d])
    return stored


def cmd_promote(args, repo: ModelRepository) -> int:
    stored = announce_stored(args, repo, pb.ModelDescriptor.PROMOTE)
    print(f"promotion of {stored.name} v{stored.version} for '{stored.data_type}' sent to {args.topic}")
    return 0


def cmd_abort(args, repo: ModelRepository) -> int:
    """Ends a rollout by a ROLLBACK to the version serving: the topic is compacted, and an
    abort message would leave a job started later with no model for the data type."""
    stored = repo.get(args.name, args.version)
    events = [pb.ModelEvent.FromString(v)
              for v in consume(args.kafka, args.events_topic, timeout_s=args.timeout)]
    serving = fold(events).get(stored.data_type)
    if serving is None or not serving.model:
        raise ValueError(f"no model serves '{stored.data_type}' according to {args.events_topic}; "
                         "send a rollback to the version you want instead")
    if (serving.model, serving.version) == (stored.name, stored.version):
        raise ValueError(f"{stored.name} v{stored.version} already serves '{stored.data_type}': "
                         "use rollback --version to go back from it")
    args.name, args.version = serving.model, serving.version
    return cmd_rollback(args, repo)


def cmd_list(args, repo: ModelRepository) -> int:
    names = [args.name] if args.name else repo.names()
    for name in names:
        for m in repo.versions(name):
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.created_ms / 1000))
            print(f"{m.name}\tv{m.version}\t{m.model_type}\t{m.data_type}\t{m.size_bytes}\t{created}\t{m.sha256[:12]}")
    return 0


def cmd_rollback(args, repo: ModelRepository) -> int:
    stored = announce_stored(args, repo, pb.ModelDescriptor.ROLLBACK)
    warn_unless_compacted(args.kafka, args.topic)
    print(f"rollback of '{stored.data_type}' to {stored.name} v{stored.version} sent to {args.topic}")
    return 0


def cmd_send(args, repo: ModelRepository) -> int:
    rows = json.loads(Path(args.samples).read_text())["inputs"]
    prefix = args.id_prefix or f"{args.data_type}-{int(time.time())}"
    records = (
        make_record(f"{prefix}-{i}", args.data_type, row, int(time.time() * 1000))
        for i, row in zip(range(args.count), itertools.cycle(rows))
    )
    encode = record_as_json if args.json else pb.DataRecord.SerializeToString
    n = produce(args.kafka, args.data_topic, (encode(r) for r in records))
    print(f"sent {n} '{args.data_type}' records{' as JSON' if args.json else ''} to {args.data_topic}")
    return 0


def cmd_tail(args, repo: ModelRepository) -> int:
    topics = TopicNames.from_env()
    topic = args.topic or {"scores": topics.scores, "dead-letters": topics.dead_letters,
                           "events": topics.model_events}[args.what]
    return tail.tail(args.kafka, topic, args.what, args.from_beginning, args.data_type,
                     args.json, args.max)


def cmd_keygen(args, repo: ModelRepository) -> int:
    key = signing.new_key_pair(args.out)
    print(f"key {key}: {args.out / 'private.pem'} signs (publish --signing-key; keep it secret), "
          f"{args.out / 'public.pem'} verifies (the job's --trusted-keys)")
    return 0


def cmd_explain(args, repo: ModelRepository) -> int:
    return explain.explain(args.kafka, args.scores_topic, args.data_topic, args.record_id, args.png,
                           args.timeout)


def cmd_status(args, repo: ModelRepository) -> int:
    events = [pb.ModelEvent.FromString(v)
              for v in consume(args.kafka, args.events_topic, timeout_s=args.timeout)]
    print(render(fold(events)))
    return 0


def parser() -> argparse.ArgumentParser:
    topics = TopicNames.from_env()
    p = argparse.ArgumentParser(prog="model-store", description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store-root", type=Path, default=Path(os.environ.get("MODEL_STORE_ROOT", DEFAULT_ROOT)))
    p.add_argument("--bootstrap-servers", default=os.environ.get("BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--kafka-config", type=Path, default=os.environ.get("KAFKA_CLIENT_CONFIG"),
                   help="a Kafka client properties file: security.protocol, sasl.mechanism, sasl.jaas.config "
                        "(PLAIN or SCRAM), ssl.truststore/keystore as PEM files [$KAFKA_CLIENT_CONFIG]")
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
        sp.add_argument("--signing-key", type=Path, default=os.environ.get("MODEL_SIGNING_KEY"),
                        help="an Ed25519 private key (PEM, `model-store keygen`) to sign the announcement "
                             "with; a job with --trusted-keys takes only signed ones [$MODEL_SIGNING_KEY]")

    pub = sub.add_parser("publish", help="store a model as its next version and announce it")
    pub.add_argument("--name", required=True)
    pub.add_argument("--data-type", required=True, help="the records this model scores")
    pub.add_argument("--type", choices=sorted(BY_NAME), required=True)
    pub.add_argument("--path", type=Path, required=True,
                     help="a PMML file, a SavedModel directory (or its .tar.gz), an ONNX file, an XGBoost model "
                          "(JSON or UBJSON) or a LightGBM model (text)")
    pub.add_argument("--description", default="")
    pub.add_argument("--explain-fraction", type=float, default=0.0, metavar="F",
                     help="the share of records (0-1) whose results carry the model's explanation "
                          "(a SavedModel's 'explain' signature, an XGBoost or LightGBM model's feature "
                          "contributions); default none")
    announcing(pub)
    rollout_flags(pub)

    ls = sub.add_parser("list", help="list stored versions")
    ls.add_argument("--name")

    rb = sub.add_parser("rollback", help="serve an earlier stored version again")
    rb.add_argument("--name", required=True)
    rb.add_argument("--version", type=int, required=True)
    announcing(rb)

    pr = sub.add_parser("promote", help="end a version's rollout now: it serves (or, with no rollout, deploy it)")
    pr.add_argument("--name", required=True)
    pr.add_argument("--version", type=int, required=True)
    announcing(pr)

    ab = sub.add_parser("abort", help="end a version's rollout: a ROLLBACK to the version serving its data type")
    ab.add_argument("--name", required=True)
    ab.add_argument("--version", type=int, required=True)
    ab.add_argument("--events-topic", default=topics.model_events)
    ab.add_argument("--timeout", type=float, default=5, help="seconds to read the events topic")
    announcing(ab)

    send = sub.add_parser("send", help="send sample data records")
    send.add_argument("--data-type", required=True)
    send.add_argument("--samples", type=Path, required=True, help="a samples.json of `make models`")
    send.add_argument("--count", type=int, default=100)
    send.add_argument("--id-prefix", default="")
    send.add_argument("--json", action="store_true", help="send JSON records (their results come back as JSON)")
    send.add_argument("--data-topic", default=topics.data)

    tl = sub.add_parser("tail", help="follow the scores, dead letters or model events, a line each")
    tl.add_argument("what", choices=sorted(tail.KINDS))
    tl.add_argument("--from-beginning", action="store_true", help="the whole topic, not only what comes now")
    tl.add_argument("--data-type", default="", help="only this data type's messages")
    tl.add_argument("--json", action="store_true", help="one JSON object per line, for machines")
    tl.add_argument("--max", type=int, default=0, help="stop after this many (default: until Ctrl-C)")
    tl.add_argument("--topic", default="", help="the topic (default: the job's, $TOPIC_SCORES, ...)")

    kg = sub.add_parser("keygen", help="make an Ed25519 key pair to sign models with")
    kg.add_argument("--out", type=Path, required=True, help="a directory for private.pem and public.pem")

    ex = sub.add_parser("explain", help="draw a record's explanation over its input (PNG)")
    ex.add_argument("--record-id", required=True)
    ex.add_argument("--png", type=Path, required=True, help="where to write the picture")
    ex.add_argument("--scores-topic", default=topics.scores)
    ex.add_argument("--data-topic", default=topics.data)
    ex.add_argument("--timeout", type=float, default=5, help="seconds to read each topic")

    st = sub.add_parser("status", help="the model each data type is served by, with its counters")
    st.add_argument("--events-topic", default=topics.model_events)
    st.add_argument("--timeout", type=float, default=5, help="seconds to read the events topic")
    return p


def rollout_flags(sp) -> None:
    g = sp.add_argument_group("rollout", "how the new version takes over (default: at once, when loaded)")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--shadow", action="store_true",
                      help="score beside the current model; only the current one's results go out")
    mode.add_argument("--canary", type=float, metavar="PERCENT",
                      help="serve this percentage of entities with the new model")
    g.add_argument("--sample", type=float, help="shadow: the fraction of records to compare (default all)")
    g.add_argument("--entity-field", default="", help="canary: the record input naming the entity "
                                                      "(default: the record id)")
    g.add_argument("--send-pairs", action="store_true", help="both models' outputs to the job's --pairs-topic")
    d = GATE_DEFAULTS
    g.add_argument("--min-records", type=int, help=f"records compared before a verdict (default {d['min_records']})")
    g.add_argument("--max-duration-s", type=float, help="abandon if the gate has not passed by then (default none)")
    g.add_argument("--min-agreement", type=float, help=f"per output (default {d['min_agreement']})")
    g.add_argument("--tolerance", type=float, help=f"numeric outputs agree within it (default {d['tolerance']:g})")
    g.add_argument("--max-error-rate", type=float, help=f"of the new model (default {d['max_error_rate']})")
    g.add_argument("--max-latency-ratio", type=float, help="p99 per-record time, new ÷ current (default off)")
    g.add_argument("--manual-promotion", action="store_true", help="on pass, wait for `model-store promote`")
    g.add_argument("--watch-s", type=float, help="after promotion, roll back if the error rate passes "
                                                 f"--max-error-rate within this long (default {d['watch_s']:g})")


COMMANDS = {"publish": cmd_publish, "list": cmd_list, "rollback": cmd_rollback, "send": cmd_send,
            "status": cmd_status, "tail": cmd_tail, "promote": cmd_promote, "abort": cmd_abort,
            "explain": cmd_explain, "keygen": cmd_keygen}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.kafka = KafkaClientConfig.load(args.bootstrap_servers, args.kafka_config)
        return COMMANDS[args.command](args, ModelRepository(args.store_root))
    except (KeyError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KafkaError as err:
        print(f"error: Kafka at {args.bootstrap_servers}: {kafka_problem(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
