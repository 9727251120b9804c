"""Produce to and read from Kafka topics with kafka-python: what the `model-store` CLI
needs (publish descriptors, send records, read model events), also used by the tools."""

from __future__ import annotations

import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource
from kafka.errors import (
    AuthorizationError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
)

from contract.topics import models_topic_problem
from model_store.kafka_config import KafkaClientConfig, KafkaConfigError, client_config

# A bootstrap string (plaintext), or the bootstrap servers with client security properties.
Kafka = str | KafkaClientConfig


def produce(kafka: Kafka, topic: str, values: Iterable[bytes], key: bytes | None = None) -> int:
    return produce_keyed(kafka, topic, ((key, value) for value in values))


def produce_keyed(kafka: Kafka, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
    """(key, value) pairs, in order; returns how many were sent.

    A send the broker refuses (e.g. not authorized) raises at the flush."""
    producer = KafkaProducer(**client_config(kafka).python_kwargs(), acks="all", linger_ms=20,
                             batch_size=1 << 20, max_request_size=16 * 1024 * 1024)
    n = 0
    try:
        refused: list[Exception] = []
        for key, value in messages:
            producer.send(topic, value, key=key).add_errback(refused.append)
            n += 1
        producer.flush()
        if refused:
            raise refused[0]
    finally:
        producer.close()
    return n


def kafka_problem(err: KafkaError) -> str:
    """What a Kafka client error means, and what to do about it."""
    if isinstance(err, AuthorizationError):
        return (f"the broker refused this principal ({err}): the ACLs do not allow it; "
                "ask the cluster's admin for the grant, or use another principal's --kafka-config")
    if isinstance(err, SaslAuthenticationFailedError):
        return f"authentication failed ({err}): check the username and password in sasl.jaas.config"
    if isinstance(err, KafkaTimeoutError):
        return ("no broker answered: check the bootstrap servers, and that security.protocol in "
                "--kafka-config is the one the listener speaks")
    return str(err)


def topic_config(kafka: Kafka, topic: str, timeout_s: float = 10) -> dict[str, str]:
    """Every configuration value of a topic, defaults included."""
    admin = KafkaAdminClient(**client_config(kafka).python_kwargs(), request_timeout_ms=int(timeout_s * 1000))
    try:
        found = admin.describe_configs([ConfigResource("TOPIC", topic)], config_filter="all")
    finally:
        admin.close()
    entries = found.get("topic", {}).get(topic, {})
    return {key: entry["value"] for key, entry in entries.items() if entry.get("value") is not None}


def check_models_topic(kafka: Kafka, topic: str) -> str:
    """Why `topic` is not fit to be the models topic ("" when it is), or why it cannot be told."""
    bootstrap = client_config(kafka).bootstrap
    try:
        config = topic_config(kafka, topic)
    except (KafkaError, OSError, KafkaConfigError) as err:
        return f"the configuration of the models topic '{topic}' cannot be read from {bootstrap}: {err}"
    if not config:
        return f"the models topic '{topic}' does not exist on {bootstrap}"
    problem = models_topic_problem(config)
    return f"the models topic '{topic}' is not compacted: {problem}" if problem else ""


def committed_reader(kafka: Kafka, *topics: str) -> KafkaConsumer:
    """A consumer of `topics` from their beginning, committed records only, no group."""
    return KafkaConsumer(
        *topics,
        **client_config(kafka).python_kwargs(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        group_id=None,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )


def consume(
    kafka: Kafka,
    topic: str,
    expected: int | None = None,
    timeout_s: float = 60,
    idle_s: float = 3,
) -> list[bytes]:
    """Read a topic from the beginning, committed records only (`read_committed`).

    Stops when `expected` values arrived (then waits `idle_s` more to catch extras),
    or when `timeout_s` passed.
    """
    consumer = committed_reader(kafka, topic)
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    extra_until: float | None = None
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                values.extend(r.value for r in records)
            if expected is not None and len(values) >= expected:
                extra_until = extra_until or time.monotonic() + idle_s
                if time.monotonic() >= extra_until:
                    break
    finally:
        consumer.close()
    return values
