"""`model-store tail`: follows a real topic (messages produced by another client, librdkafka),
from now or from the beginning, filters by data type, prints JSON, stops on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from confluent_kafka import Producer

from contract import scoring_pb2 as pb
from contract.values import fill_map
from infra import paths
from infra.topics import create_topics, unique_topics
from model_store.tail import render

pytestmark = pytest.mark.integration


def result(record_id: str, data_type: str, version: int = 3) -> bytes:
    r = pb.ScoringResult(record_id=record_id, data_type=data_type, model_name="wine", model_version=version,
                         scoring_time_ms=1_700_000_000_123)
    fill_map(r.outputs, {"label": "red", "p": 0.123456, "probabilities": np.array([0.1, 0.9], np.float32)})
    return r.SerializeToString()


def send(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, value)
    assert producer.flush(30) == 0


def tail(bootstrap: str, topic: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "model_store.cli", "--bootstrap-servers", bootstrap,
                             "tail", "scores", "--topic", topic, *args],
                            cwd=paths.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_from_the_beginning_filtered_by_data_type_as_json(kafka):
    topic = unique_topics("scores")["scores"]
    create_topics(kafka.bootstrap_servers, [topic])
    send(kafka.bootstrap_servers, topic, [result("a-1", "wine"), result("b-1", "beer"), result("a-2", "wine")])
    done = tail(kafka.bootstrap_servers, topic, "--from-beginning", "--data-type", "wine", "--json", "--max", "2")
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["record_id"] for r in rows] == ["a-1", "a-2"]
    assert rows[0]["model_version"] == "3" and rows[0]["outputs"]["label"] == {"string_value": "red"}


def test_from_now_shows_only_new_messages_and_stops_cleanly_on_ctrl_c(kafka):
    topic = unique_topics("scores")["scores"]
    create_topics(kafka.bootstrap_servers, [topic])
    send(kafka.bootstrap_servers, topic, [result("old-1", "wine")])
    following = tail(kafka.bootstrap_servers, topic)
    try:
        assert "following" in following.stderr.readline()  # joined: what comes now is shown
        send(kafka.bootstrap_servers, topic, [result("new-1", "wine"), b"\x00not a result"])
        lines = [following.stdout.readline(), following.stdout.readline()]
        time.sleep(1)
        following.send_signal(signal.SIGINT)
        out, err = following.communicate(timeout=30)
    finally:
        if following.poll() is None:
            following.kill()
    assert following.returncode == 0 and "Traceback" not in err
    assert "old-1" not in "".join(lines) + out
    assert lines[0].rstrip() == render("scores", result("new-1", "wine"))
    assert "new-1  wine v3  label=red p=0.1235 probabilities=[0.1, 0.9] [2]" in lines[0]
    assert lines[1].startswith("<13 bytes that are not a ScoringResult")


def test_each_kind_reads_as_one_line():
    dead = pb.DeadLetter(record_id="r9", data_type="wine", stage="validate", reason="missing input(s) ['ash']",
                         model_name="wine", model_version=2, time_ms=1_700_000_000_000)
    event = pb.ModelEvent(state=pb.ModelEvent.AVAILABLE, data_type="wine", model_name="wine", model_version=2,
                          reason="replaces wine v1", time_ms=1_700_000_000_000)
    assert render("dead-letters", dead.SerializeToString()).endswith(
        "wine  r9  validate: missing input(s) ['ash']  (wine v2)")
    assert render("events", event.SerializeToString()).endswith("AVAILABLE  wine  wine v2  replaces wine v1")
    assert render("events", event.SerializeToString(), data_type="beer") is None


def test_a_json_result_reads_as_the_same_line_as_its_protobuf_twin():
    twin = json.dumps({"record_id": "a-1", "data_type": "wine", "model_name": "wine", "model_version": 3,
                       "outputs": {"label": "red", "p": 0.123456, "probabilities": [0.1, 0.9]},
                       "scoring_time_ms": 1_700_000_000_123}).encode()
    assert render("scores", twin) == render("scores", result("a-1", "wine"))
