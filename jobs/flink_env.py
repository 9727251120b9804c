"""Building blocks the job files share: the execution environment, Kafka sources and sinks."""

from __future__ import annotations

import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from pyflink.common import Configuration, Types
from pyflink.common.serialization import ByteArraySchema
from pyflink.datastream import (
    CheckpointingMode,
    DataStream,
    KeyedStream,
    StreamExecutionEnvironment,
)
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)
from pyflink.java_gateway import get_gateway

from jobs.jars import job_jars, shaded_class_names
from model_store.kafka_config import KafkaClientConfig, client_config

STARTING_OFFSETS = {
    "earliest": KafkaOffsetsInitializer.earliest,
    "latest": KafkaOffsetsInitializer.latest,
    "committed": lambda: KafkaOffsetsInitializer.committed_offsets(),
}
BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
DELIVERY = {
    "exactly-once": DeliveryGuarantee.EXACTLY_ONCE,
    "at-least-once": DeliveryGuarantee.AT_LEAST_ONCE,
    "none": DeliveryGuarantee.NONE,
}


EXECUTION_MODES = ("process", "thread")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def execution_environment(
    parallelism: int, checkpoint_interval_ms: int, extra: dict[str, str] | None = None,
    execution_mode: str = "process",
) -> StreamExecutionEnvironment:
    """An environment whose Python functions run with this interpreter: in worker processes
    ("process"), or embedded in the TaskManager's JVM by PEMJA ("thread").

    The same code serves a local MiniCluster (`python -m jobs.x`) and `flink run`.
    """
    config = Configuration()
    config.set_string("python.execution-mode", execution_mode)
    # The workers use the interpreter that runs the job's driver: the project's venv.
    config.set_string("python.executable", sys.executable)
    if execution_mode == "thread":
        # The embedded interpreter starts from the base Python, not the venv: without this it
        # cannot import pemja ("No module named 'pemja'"), nor the job's own packages.
        config.set_string("python.pythonpath", embedded_python_path())
    # Off by default in 2.2.1: without it none of the functions' metrics show (README, "Metrics").
    config.set_string("python.metric.enabled", "true")
    for key, value in (extra or {}).items():
        config.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    # Appends to what `flink run -j` set; as a job's jars, not in the cluster's lib/.
    env.add_jars(*(jar.as_uri() for jar in job_jars()))
    env.set_parallelism(parallelism)
    if checkpoint_interval_ms > 0:
        env.enable_checkpointing(checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    return env


def embedded_python_path() -> str:
    """The project and the venv's packages, for an interpreter that does not run the venv's
    site-packages (its .pth files, the project's editable install, are not read)."""
    return ":".join(dict.fromkeys([str(PROJECT_ROOT), sysconfig.get_paths()["purelib"]]))


def bytes_source(
    kafka: str | KafkaClientConfig,
    topic: str,
    group_id: str,
    starting_offsets: str = "earliest",
    bounded: bool = False,
) -> KafkaSource:
    """A source of raw record values (Python `bytes`)."""
    kafka = client_config(kafka)
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(kafka.bootstrap)
        .set_topics(topic)
        .set_group_id(group_id)
        .set_starting_offsets(STARTING_OFFSETS[starting_offsets]())
        .set_value_only_deserializer(ByteArraySchema())
        # Read only what exactly-once producers committed.
        .set_property("isolation.level", "read_committed")
        .set_property("partition.discovery.interval.ms", "10000")
    )
    if bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    return with_properties(builder, kafka).build()


def bytes_sink(
    kafka: str | KafkaClientConfig,
    topic: str,
    delivery: str = "at-least-once",
    transactional_id_prefix: str | None = None,
) -> KafkaSink:
    """A sink of raw record values (Python `bytes`) to one topic."""
    kafka = client_config(kafka)
    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(kafka.bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(ByteArraySchema())
            .build()
        )
        .set_delivery_guarantee(DELIVERY[delivery])
        .set_property("max.request.size", str(16 * 1024 * 1024))
    )
    if delivery == "exactly-once":
        # Must not exceed the broker's transaction.max.timeout.ms.
        builder = builder.set_transactional_id_prefix(transactional_id_prefix or topic)
        builder = builder.set_property("transaction.timeout.ms", str(15 * 60 * 1000))
    return with_properties(builder, kafka).build()


def with_properties(builder, kafka: KafkaClientConfig):
    """The client properties (security and any other) on a source's or sink's Kafka clients,
    class names relocated as the connector jar has them."""
    for key, value in kafka.properties.items():
        builder = builder.set_property(key, shaded_class_names(value))
    return builder


def keyed_by_data_type(records: DataStream, record_format: str, max_record_bytes: int) -> KeyedStream:
    """Records (bytes) keyed by their data type, read on the JVM by the job's DataTypeKey
    (jvm/keying; "" when it cannot be read).

    PyFlink's own key_by would run a Python function per record in a stage of its own, before
    the exchange: the job's Python code would run in two stages, each paying the framework's
    per-record cost. This builds what key_by builds (Row(key, value), keyed by field 0 with
    PyFlink's KeyByKeySelector), with a Java map instead."""
    jvm = get_gateway().jvm
    keyed = (records._j_data_stream
             .map(jvm.io.github.flinkscoring.DataTypeKey(record_format, max_record_bytes),
                  Types.ROW([Types.STRING(), BYTES]).get_java_type_info())
             .name("key by data type").uid("key-by-data-type")
             .keyBy(jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info()))
    return KeyedStream(keyed, BYTES, records)


def batched_by_data_type(records: DataStream, record_format: str, max_record_bytes: int, batch_size: int,
                         max_wait_ms: int) -> KeyedStream:
    """The columnar path: records read into Arrow column batches per data type on the JVM, by the
    job's RecordBatcher (jvm/operators; flushed before every checkpoint barrier), keyed by
    data type as `keyed_by_data_type` keys single records."""
    jvm = get_gateway().jvm
    batcher = jvm.io.github.flinkscoring.RecordBatcher(record_format, max_record_bytes, batch_size, max_wait_ms)
    keyed = (records._j_data_stream
             .transform("read records into column batches", Types.ROW([Types.STRING(), BYTES]).get_java_type_info(),
                        batcher)
             .uid("batch-records")
             .setBufferTimeout(0)  # an element is a whole batch: send each as it is made
             .keyBy(jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info()))
    return KeyedStream(keyed, BYTES, records)


def written_from_columns(scored: DataStream) -> DataStream:
    """The columnar path: scored batches written as one message per record on the JVM (the
    job's WriteResults): results on the main output, dead letters on "dead-letters"."""
    writer = get_gateway().jvm.io.github.flinkscoring.WriteResults()
    return DataStream(scored._j_data_stream.process(writer, BYTES.get_java_type_info())
                      .name("write results").uid("write-results"))


def routed_by_tag(tagged: DataStream, side_outputs: Sequence[str], name: str, uid: str) -> DataStream:
    """The tagged outputs of a Python function (first byte 0: main output, i: the i-th of
    `side_outputs`), split on the JVM by the job's RouteByTag (jvm/operators). Its side
    outputs are read with `side_output`."""
    gateway = get_gateway()
    names = gateway.new_array(gateway.jvm.String, len(side_outputs))
    for i, side in enumerate(side_outputs):
        names[i] = side
    return DataStream(tagged._j_data_stream
                      .process(gateway.jvm.io.github.flinkscoring.RouteByTag(names), BYTES.get_java_type_info())
                      .name(name).uid(uid))


def side_output(routed: DataStream, name: str) -> DataStream:
    """A side output of a `routed_by_tag` stream, read on the JVM (PyFlink's get_side_output
    would add a Python identity map)."""
    tag = get_gateway().jvm.io.github.flinkscoring.RouteByTag.sideOutput(name)
    return DataStream(routed._j_data_stream.getSideOutput(tag))
