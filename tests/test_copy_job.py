"""The first Kafka -> PyFlink -> Kafka path, against the real broker."""

from __future__ import annotations

import pytest

from infra import flink_cluster, paths
from infra.topics import create_topics, unique_topics
from jobs.jars import kafka_connector_jar
from model_store.kafka_io import consume, produce

pytestmark = pytest.mark.integration

# Not valid UTF-8 on purpose: records are opaque bytes end to end.
RECORDS = [f"record-{i}".encode() + b"\xff\x00" for i in range(500)]


def _topics(kafka):
    topics = unique_topics("in", "out")
    create_topics(kafka.bootstrap_servers, topics.values(), partitions=2)
    produce(kafka.bootstrap_servers, topics["in"], RECORDS)
    return topics


def _args(kafka, topics, delivery):
    return [
        "--bootstrap-servers", kafka.bootstrap_servers,
        "--source-topic", topics["in"],
        "--sink-topic", topics["out"],
        "--group-id", "test-" + topics["in"],
        "--bounded",
        "--delivery", delivery,
        "--checkpoint-interval-ms", "1000",
    ]


@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_copy_job_on_minicluster(kafka, job_runner, delivery):
    topics = _topics(kafka)
    done = job_runner("jobs.copy_topic", _args(kafka, topics, delivery))
    assert done.returncode == 0, done.stdout[-5000:]
    copied = consume(kafka.bootstrap_servers, topics["out"], expected=len(RECORDS))
    assert sorted(copied) == sorted(RECORDS)


@pytest.mark.cluster
def test_copy_job_with_flink_run(kafka, standalone_cluster):
    topics = _topics(kafka)
    done = flink_cluster.flink_run(
        ["-py", str(paths.ROOT / "jobs" / "copy_topic.py"), "-j", str(kafka_connector_jar()),
         *_args(kafka, topics, "at-least-once")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert "has finished" in done.stdout
    copied = consume(kafka.bootstrap_servers, topics["out"], expected=len(RECORDS))
    assert sorted(copied) == sorted(RECORDS)
