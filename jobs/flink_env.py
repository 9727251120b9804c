"""Building blocks the job files share: the execution environment, Kafka sources and sinks."""

from __future__ import annotations

import sys

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


def execution_environment(
    parallelism: int, checkpoint_interval_ms: int, extra: dict[str, str] | None = None
) -> StreamExecutionEnvironment:
    """An environment whose Python workers run in separate processes with this interpreter.

    The same code serves a local MiniCluster (`python -m jobs.x`) and `flink run`.
    """
    config = Configuration()
    config.set_string("python.execution-mode", "process")
    # The workers use the interpreter that runs the job's driver: the project's venv.
    config.set_string("python.executable", sys.executable)
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
