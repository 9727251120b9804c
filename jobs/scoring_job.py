"""The scoring job: data records keyed by data type, connected to the broadcast stream of
model updates, scored in micro-batches by the model each data type currently serves.

    python -m jobs.scoring_job [flags]                     # local MiniCluster
    flink run -py jobs/scoring_job.py -j lib/flink/flink-sql-connector-kafka-5.0.0-2.2.jar [flags]

Every flag can also be set by environment variable: --batch-size <-> SCORING_BATCH_SIZE.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

from pyflink.common import WatermarkStrategy

from contract import signing
from contract.json_records import RECORD_FORMATS
from contract.topics import TopicNames
from jobs.flink_env import (
    BYTES,
    DELIVERY,
    EXECUTION_MODES,
    STARTING_OFFSETS,
    batched_by_data_type,
    bytes_sink,
    bytes_source,
    execution_environment,
    keyed_by_data_type,
    routed_by_tag,
    side_output,
    written_from_columns,
)
from jobs.operators import (
    SIDE_OUTPUTS,
    UNSIGNED_WARNING,
    ParseDescriptors,
    accepted_models,
)
from jobs.score_batches import ScoreBatches
from jobs.score_records import ScoreRecords
from model_store.kafka_config import KafkaClientConfig, KafkaConfigError
from model_store.kafka_io import check_models_topic
from scoring.options import ScoringOptions


def job_parser(environ: Mapping[str, str] = os.environ) -> argparse.ArgumentParser:
    """Every flag of the job; a SCORING_<FLAG> (or TOPIC_<NAME>) variable in `environ` sets its
    default. `infra/flag_table.py` renders the README's table from it, with an empty environ."""
    topics = TopicNames.from_env(environ=environ)
    defaults = ScoringOptions()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)

    def flag(name: str, **kwargs) -> None:
        env = "SCORING_" + name.lstrip("-").upper().replace("-", "_")
        if env in environ:
            kwargs["default"] = kwargs.get("type", str)(environ[env])
        kwargs["help"] = kwargs.get("help", "") + f" [${env}]"
        p.add_argument(name, **kwargs)

    flag("--bootstrap-servers", default="127.0.0.1:9092")
    flag("--kafka-config", default="",
         help="a Kafka client properties file (security.protocol, sasl.*, ssl.*, ...) for every "
              "source and sink; certificate and key files must exist at the same paths on the TaskManagers")
    flag("--data-topic", default=topics.data)
    flag("--models-topic", default=topics.models)
    flag("--scores-topic", default=topics.scores)
    flag("--dead-letters-topic", default=topics.dead_letters)
    flag("--model-events-topic", default=topics.model_events)
    flag("--pairs-topic", default="",
         help="rollouts whose policy asks for it send both models' outputs of a record here (default: off)")
    flag("--group-id", default="scoring-job")
    flag("--starting-offsets", choices=sorted(STARTING_OFFSETS), default="earliest",
         help="where to start reading data when there is no checkpoint")
    flag("--parallelism", type=int, default=1)
    flag("--batch-size", type=int, default=defaults.batch_size, help="records per model call, at most")
    flag("--batch-max-wait-ms", type=int, default=defaults.batch_max_wait_ms,
         help="how long a record may wait for its batch to fill")
    flag("--checkpoint-interval-ms", type=int, default=5000)
    flag("--delivery", choices=sorted(DELIVERY), default="exactly-once")
    flag("--store-allow-list", default=",".join(defaults.store_allow_list),
         help="comma-separated URL prefixes models may be fetched from")
    flag("--model-cache-dir", default=defaults.model_cache_dir,
         help="where fetched models are kept, by SHA-256: a directory of the TaskManager's user that no "
              "one else may write to (default ~/.cache/flink-scoring/models of that user)")
    flag("--model-cache-size", type=int, default=defaults.model_cache_size,
         help="loaded models kept per operator instance (LRU)")
    flag("--max-artifact-bytes", type=int, default=defaults.max_artifact_bytes)
    flag("--no-model-policy", choices=["hold", "dead-letter"], default=defaults.no_model_policy,
         help="records of a data type with no model yet: hold them until one is ready, or dead-letter them")
    flag("--max-held-records", type=int, default=defaults.max_held_records,
         help="records held per data type while no model serves it")
    flag("--max-held-total", type=int, default=defaults.max_held_total,
         help="records held per subtask, of all data types no model serves yet; more are dead-lettered")
    flag("--hold-unpublished-ms", type=int, default=defaults.hold_unpublished_ms,
         help="records of a data type with no accepted descriptor wait this long for one (it may be "
              "on its way), then are dead-lettered")
    flag("--max-data-types", type=int, default=defaults.max_data_types,
         help="data types the job takes descriptors for; more are REJECTED")
    flag("--max-inline-total-bytes", type=int, default=defaults.max_inline_total_bytes,
         help="inline artifact bytes of all kept descriptors (every subtask keeps them all)")
    flag("--load-retry-s", type=float, default=defaults.load_retry_s,
         help="a model that failed to load is tried again after this long while a data type still needs it")
    flag("--max-record-bytes", type=int, default=defaults.max_record_bytes)
    flag("--max-record-crashes", type=int, default=defaults.max_record_crashes,
         help="a record whose scoring killed the worker process this many times is dead-lettered "
              "(the crash journal is kept in the model cache directory)")
    flag("--max-load-crashes", type=int, default=defaults.max_load_crashes,
         help="a model version whose load (fetch, load, warm-up, verification) killed the worker process "
              "this many times in a row is not loaded again: it fails at once with an ERROR event and the "
              "current model serves on (the load journal is kept beside the crash journal)")
    flag("--trusted-keys", default="",
         help="comma-separated Ed25519 public keys (PEM files, or directories of them): only models "
              "signed by one of them are loaded. Default: none, and any model is loaded")
    flag("--revoked", default="",
         help='comma-separated revocation lists, JSON {"keys": [key ids], "models": ["name:version"]}: '
              "descriptors signed by those keys, or of those versions, are refused and do not load")
    flag("--allow-model-ops", default="",
         help="file-system or process ops a data type's SavedModels may use, refused otherwise: "
              "'text=InitializeTableFromTextFileV2,images=ReadFile+WriteFile'")
    flag("--record-format", choices=RECORD_FORMATS, default=defaults.record_format,
         help="records as protobuf DataRecords or JSON; auto: JSON when a record starts with '{'. "
              "A result is written in its record's format")
    flag("--stats-interval-ms", type=int, default=defaults.stats_interval_ms)
    flag("--bundle-time-ms", type=int, default=50,
         help="PyFlink bundle time: bounds how long results wait in the Python worker")
    flag("--bundle-size", type=int, default=1000,
         help="PyFlink bundle size (Flink's default): at each bundle end the JVM waits for the Python "
              "worker, whose state cache is written back. 20000 measured 1.24x for TF and 1.30x for "
              "pass-through, but 0.63x for PMML (docs/benchmarks.md)")
    flag("--buffer-timeout-ms", type=int, default=100,
         help="Flink's network buffer timeout (its default): how long a record may wait in a "
              "buffer that is not full before it goes to the next task")
    flag("--execution-mode", choices=EXECUTION_MODES, default="process",
         help="PyFlink runs the Python functions in worker processes, or embedded in the "
              "TaskManager's JVM (thread; PMML models cannot load there). docs/internals.md")
    flag("--checkpoint-dir", default="", help="where checkpoints go (default: the cluster's config)")
    flag("--restore-from", default="", help="a checkpoint or savepoint path to start from")
    flag("--job-name", default="model scoring")
    flag("--models-topic-check", choices=["warn", "refuse", "off"], default="warn",
         help="at start, check that the models topic is compacted: warn, or refuse to start, if it is not")
    flag("--columnar", type=lambda v: str(v).lower() in ("1", "true", "yes"), default=True,
         help="records read into column batches and results written on the JVM, Python scoring one batch "
              "per element (docs/columnar.md); false: Python reads and writes record by record, 5-6x slower")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    return job_parser().parse_args(argv)


def allowed_ops(flag: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """'text=A+B,images=C' -> (("text", ("A", "B")), ("images", ("C",)))."""
    entries = []
    for item in filter(None, flag.split(",")):
        data_type, _, ops = item.partition("=")
        if not data_type or not ops:
            raise SystemExit(f"error: --allow-model-ops entry {item!r} is not DATA_TYPE=OP[+OP...]")
        entries.append((data_type, tuple(ops.split("+"))))
    return tuple(entries)


def options_from(args: argparse.Namespace) -> ScoringOptions:
    return ScoringOptions(
        batch_size=args.batch_size,
        batch_max_wait_ms=args.batch_max_wait_ms,
        store_allow_list=tuple(s for s in args.store_allow_list.split(",") if s),
        model_cache_dir=args.model_cache_dir,
        model_cache_size=args.model_cache_size,
        max_artifact_bytes=args.max_artifact_bytes,
        no_model_policy=args.no_model_policy,
        max_held_records=args.max_held_records,
        max_held_total=args.max_held_total,
        hold_unpublished_ms=args.hold_unpublished_ms,
        max_data_types=args.max_data_types,
        max_inline_total_bytes=args.max_inline_total_bytes,
        load_retry_s=args.load_retry_s,
        stats_interval_ms=args.stats_interval_ms,
        max_record_bytes=args.max_record_bytes,
        max_record_crashes=args.max_record_crashes,
        max_load_crashes=args.max_load_crashes,
        journal_name=args.group_id,
        record_format=args.record_format,
        trusted_keys=tuple(k for k in args.trusted_keys.split(",") if k),
        revoked=tuple(k for k in args.revoked.split(",") if k),
        allowed_model_ops=allowed_ops(args.allow_model_ops),
        send_pairs=bool(args.pairs_topic),
    )


def build(env, args: argparse.Namespace, kafka: KafkaClientConfig, score=None) -> None:
    """Sources -> connect(records keyed by data type, broadcast models) -> score -> sinks.
    The benchmarks' bare-PyFlink baseline passes an identity function to score.

    Every operator with state has a uid, so that a later version of the job restores this
    one's checkpoints and savepoints."""

    def source(topic: str, group: str, starting_offsets: str, uid: str):
        return env.from_source(bytes_source(kafka, topic, group, starting_offsets),
                               WatermarkStrategy.no_watermarks(), f"kafka: {topic}").uid(uid)

    options = options_from(args)

    def sink(stream, topic: str, name: str) -> None:
        (stream.sink_to(bytes_sink(kafka, topic, args.delivery, transactional_id_prefix=f"{args.group_id}-{name}"))
         .name(f"kafka: {topic}").uid(f"sink-{name}"))

    data = source(args.data_topic, args.group_id, args.starting_offsets, "data-source")
    if args.columnar:
        records = batched_by_data_type(data, options.record_format, options.max_record_bytes, options.batch_size,
                                       options.batch_max_wait_ms)
    else:
        records = keyed_by_data_type(data, options.record_format, options.max_record_bytes)
    # Model updates are read from the start, so a fresh job learns every data type's model.
    models = routed_by_tag(
        source(args.models_topic, args.group_id + "-models", "earliest", "models-source")
        .process(ParseDescriptors(options.trusted_keys, options.revoked), output_type=BYTES)
        .name("parse model descriptors").uid("parse-model-descriptors"),
        SIDE_OUTPUTS, "route descriptors", "route-descriptors")
    routed = routed_by_tag(
        records.connect(models.broadcast(accepted_models(args.execution_mode)))
        .process(score or (ScoreBatches if args.columnar else ScoreRecords)(options, args.execution_mode),
                 output_type=BYTES)
        .name("score").uid("score"),
        SIDE_OUTPUTS, "route outputs", "route-outputs")
    scores, dead_letters = routed, side_output(routed, "dead-letters")
    if args.columnar:  # the main output carries scored batches: results and dead letters are written here
        scores = written_from_columns(routed)
        dead_letters = dead_letters.union(side_output(scores, "dead-letters"))

    sink(scores, args.scores_topic, "scores")
    sink(dead_letters, args.dead_letters_topic, "dead-letters")
    sink(side_output(models, "model-events").union(side_output(routed, "model-events")),
         args.model_events_topic, "model-events")
    if args.pairs_topic:
        sink(side_output(routed, "shadow-pairs"), args.pairs_topic, "pairs")


def kafka_config(args: argparse.Namespace) -> KafkaClientConfig:
    try:
        return KafkaClientConfig.load(args.bootstrap_servers, args.kafka_config)
    except KafkaConfigError as err:
        sys.exit(f"error: --kafka-config: {err}")


def check_models_topic_or_exit(args: argparse.Namespace, kafka: KafkaClientConfig) -> None:
    """A models topic that deletes old messages forgets the models of a job started later."""
    problem = "" if args.models_topic_check == "off" else check_models_topic(kafka, args.models_topic)
    if problem and args.models_topic_check == "refuse":
        sys.exit(f"error: not starting: {problem}. Create it compacted (docs/running.md, 'The models topic'), "
                 "or start with --models-topic-check warn.")
    if problem:
        print(f"WARNING: {problem}. See docs/running.md, 'The models topic'.", file=sys.stderr, flush=True)


def environment(args: argparse.Namespace):
    """The execution environment the job's flags ask for."""
    extra = {"python.fn-execution.bundle.time": str(args.bundle_time_ms),
             "python.fn-execution.bundle.size": str(args.bundle_size),
             "execution.buffer-timeout.interval": f"{args.buffer_timeout_ms} ms"}
    if args.checkpoint_dir:
        extra["execution.checkpointing.dir"] = args.checkpoint_dir
        extra["execution.checkpointing.externalized-checkpoint-retention"] = "RETAIN_ON_CANCELLATION"
    if args.restore_from:
        extra["execution.state-recovery.path"] = args.restore_from
    return execution_environment(args.parallelism, args.checkpoint_interval_ms, extra, args.execution_mode)


def check_trust_or_exit(options: ScoringOptions) -> None:
    """Keys and revocation lists that cannot be read stop the job here, not in its tasks."""
    try:
        trust = signing.load_trust(options.trusted_keys, options.revoked)
    except signing.SignatureError as err:
        sys.exit(f"error: {err}")
    if not trust.required:
        print(f"WARNING: {UNSIGNED_WARNING}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    check_trust_or_exit(options_from(args))
    kafka = kafka_config(args)
    check_models_topic_or_exit(args, kafka)
    env = environment(args)
    build(env, args, kafka)
    env.execute(args.job_name)


if __name__ == "__main__":
    main()
