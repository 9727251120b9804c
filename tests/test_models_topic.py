"""The models topic is compacted: a job started any time later, without a checkpoint, still
learns the latest model of every data type. Real broker, real log cleaner, real MiniCluster."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from contract import scoring_pb2 as pb
from contract.topics import MODELS_TOPIC_CONFIG, models_topic_problem
from infra import paths
from infra.job_harness import RunningJob, ScoringSetup
from infra.topics import EAGER_COMPACTION, create_topics, unique_topics, wait_until_compacted
from model_store.kafka_io import check_models_topic
from model_store.repository import ModelRepository
from model_store.server import ModelStoreServer
from tests.conftest import load_samples


@pytest.mark.parametrize(("config", "expected"), [
    ({"cleanup.policy": "compact"}, ""),
    ({"cleanup.policy": "compact,delete", "retention.ms": "-1"}, ""),
    ({"cleanup.policy": "delete", "retention.ms": "86400000"}, "not 'compact'"),
    ({}, "not 'compact'"),
    ({"cleanup.policy": "compact,delete", "retention.ms": "604800000"}, "still deleted after retention.ms (604800000)"),
])
def test_a_models_topic_must_compact_and_never_delete(config, expected):
    problem = models_topic_problem(config)
    assert (expected in problem) if expected else problem == ""


@pytest.mark.integration
def test_the_check_reads_the_topic_configuration_from_the_broker(kafka):
    topics = unique_topics("compacted", "deleting")
    create_topics(kafka.bootstrap_servers, topics.values(), configs={topics["compacted"]: MODELS_TOPIC_CONFIG})
    assert check_models_topic(kafka.bootstrap_servers, topics["compacted"]) == ""
    assert "is not compacted: cleanup.policy is 'delete'" in check_models_topic(
        kafka.bootstrap_servers, topics["deleting"])
    assert "does not exist" in check_models_topic(kafka.bootstrap_servers, "no-such-" + topics["deleting"])
    assert "cannot be read from 127.0.0.1:1" in check_models_topic("127.0.0.1:1", topics["compacted"])


@pytest.mark.integration
def test_the_job_refuses_a_deleting_models_topic_when_told_to(kafka):
    topic = unique_topics("deleting")["deleting"]
    create_topics(kafka.bootstrap_servers, [topic])
    done = subprocess.run(
        [sys.executable, "-m", "jobs.scoring_job", "--bootstrap-servers", kafka.bootstrap_servers,
         "--models-topic", topic, "--models-topic-check", "refuse"],
        cwd=paths.ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"not starting: the models topic '{topic}' is not compacted" in done.stderr


@pytest.mark.integration
def test_a_fresh_job_after_compaction_serves_the_latest_version_of_every_data_type(
        kafka, samples, tmp_path):
    repo = ModelRepository(tmp_path / "store")
    repo.root.mkdir()
    model = samples["wine-pmml"] / "model.pmml"
    with ModelStoreServer(repo.root) as server:
        setup = ScoringSetup(kafka.bootstrap_servers, repo, server.base_url, tmp_path,
                             models_topic_config=EAGER_COMPACTION)
        for _ in range(3):
            setup.publish("fresh-a", "fresh-a", "pmml", model)      # v1, v2, v3
        setup.publish("fresh-b", "fresh-b", "pmml", model)
        setup.publish("fresh-b", "fresh-b", "pmml", model)
        setup.rollback("fresh-b", 1)                                 # latest: ROLLBACK to v1
        time.sleep(2)  # past segment.ms: the next message closes the segment holding these
        setup.publish("fresh-c", "fresh-c", "pmml", model)
        assert wait_until_compacted(setup.bootstrap, setup.topics["models"], at_most=3) == 3

        rows = load_samples(samples["wine-pmml"])["inputs"]
        with RunningJob(setup.job_args(), tmp_path / "job.log") as job:
            ids = [i for t in ("fresh-a", "fresh-b", "fresh-c") for i in setup.send_records(t, rows, prefix=t)]
            results = setup.scores(expected=len(ids), timeout_s=180)
            job.assert_running()
    assert sorted(r.record_id for r in results) == sorted(ids), job.log_tail()
    assert {(r.data_type, r.model_version) for r in results} == {
        ("fresh-a", 3), ("fresh-b", 1), ("fresh-c", 1)}
    accepted = {(e.data_type, e.reason) for e in setup.events() if e.state == pb.ModelEvent.ACCEPTED}
    assert accepted == {("fresh-a", "DEPLOY"), ("fresh-b", "ROLLBACK"), ("fresh-c", "DEPLOY")}

