"""Model artifacts in an S3 bucket: published there by `model-store`, fetched by the job with
the allow-list, size cap, SHA-256 check and cache it applies to HTTP. The bucket is served by
moto's S3 server on 127.0.0.1 (a real HTTP server speaking the S3 API, from PyPI); s3fs and
botocore talk to it as to AWS, with credentials from the environment."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import fsspec
import pytest
from moto.server import ThreadedMotoServer

from contract import scoring_pb2 as pb
from infra.job_harness import RunningJob, ScoringSetup, nudge_until_event
from infra.procs import free_port
from model_store import cli
from model_store.fetcher import ArtifactFetcher, FetchError, FetchPolicy
from model_store.kafka_io import consume
from model_store.repository import ModelRepository
from scoring.batch import score_batch
from scoring.loader import load_servable
from tests.conftest import load_samples
from tests.test_backends import assert_close

BUCKET = "models"
PREFIX = f"s3://{BUCKET}/prod"


@pytest.fixture(scope="module")
def s3():
    """An S3 endpoint with one bucket; the AWS variables point this process and its children
    (the jobs) at it, and are put back afterwards."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    aws = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test-key",
           "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in aws}
    os.environ.update(aws)
    try:
        fs = fsspec.filesystem("s3", use_listings_cache=False)
        fs.mkdir(BUCKET)
        yield fs
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        fsspec.filesystem("s3", use_listings_cache=False).clear_instance_cache()
        server.stop()


@pytest.fixture
def repo(tmp_path) -> ModelRepository:
    repo = ModelRepository(tmp_path / "store")
    repo.root.mkdir()
    return repo


def fetcher(tmp_path: Path, allow: str = PREFIX + "/", max_bytes: int = 1 << 30) -> ArtifactFetcher:
    return ArtifactFetcher(tmp_path / "cache", FetchPolicy.parse(allow, max_bytes=max_bytes, backoff_s=0.01))


def descriptor(location: str, data: bytes) -> pb.ModelDescriptor:
    return pb.ModelDescriptor(name="m", data_type="t", model_type=pb.PMML, version=1, location=location,
                              sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


@pytest.mark.integration
def test_publish_uploads_to_the_bucket_and_the_job_side_fetches_verifies_and_scores(
        s3, kafka, repo, samples, tmp_path):
    from infra.topics import create_job_topics, unique_topics

    topics = unique_topics(*("data", "models", "scores", "dead-letters", "model-events"))
    create_job_topics(kafka.bootstrap_servers, topics)
    assert cli.main(["--store-root", str(repo.root), "--bootstrap-servers", kafka.bootstrap_servers,
                     "publish", "--name", "wine", "--data-type", "wine", "--type", "pmml",
                     "--path", str(samples["wine-pmml"] / "model.pmml"), "--topic", topics["models"],
                     "--base-url", PREFIX, "--inline-max-bytes", "0"]) == 0
    d = pb.ModelDescriptor.FromString(consume(kafka.bootstrap_servers, topics["models"], expected=1)[0])
    assert d.location == f"{PREFIX}/wine/1/model.pmml"
    assert s3.cat(d.location) == (samples["wine-pmml"] / "model.pmml").read_bytes()

    servable = load_servable(d, fetcher(tmp_path))
    doc = load_samples(samples["wine-pmml"])
    for outcome, expected in zip(score_batch(servable.model, doc["inputs"]), doc["expected"], strict=True):
        assert_close(outcome.outputs, expected)
    assert fetcher(tmp_path).fetch(d).from_cache


@pytest.mark.integration
@pytest.mark.parametrize(("location", "allow", "message"), [
    (f"{PREFIX}/wine/1/model.pmml", f"s3://{BUCKET}/staging/", "outside the allow-list"),
    (f"{PREFIX}/../secrets/model.pmml", PREFIX + "/", "outside the allow-list"),
    (f"s3://other-{BUCKET}/prod/model.pmml", PREFIX + "/", "outside the allow-list"),
    (f"{PREFIX}/missing/model.pmml", PREFIX + "/", "cannot be read (FileNotFoundError"),
])
def test_an_object_location_is_refused_with_the_reason(s3, tmp_path, location, allow, message):
    with pytest.raises(FetchError, match=message.replace("(", r"\(")):
        fetcher(tmp_path, allow).fetch(descriptor(location, b"<PMML/>"))


@pytest.mark.integration
def test_a_replaced_or_oversize_object_is_refused_and_not_cached(s3, tmp_path):
    location = f"{PREFIX}/tampered/1/model.pmml"
    published = b"<PMML>the model as published</PMML>"
    s3.pipe(location, b"<PMML>the model as tampered!</PMML>")  # same size, other bytes
    with pytest.raises(FetchError, match="SHA-256 .*Refused: republish"):
        fetcher(tmp_path).fetch(descriptor(location, published))
    s3.pipe(location, published + b" and more")
    with pytest.raises(FetchError, match="bytes; the descriptor says"):
        fetcher(tmp_path).fetch(descriptor(location, published))
    s3.pipe(location, published)
    with pytest.raises(FetchError, match="over the limit"):
        fetcher(tmp_path, max_bytes=10).fetch(descriptor(location, published))
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert fetcher(tmp_path).fetch(descriptor(location, published)).path.read_bytes() == published


@pytest.mark.integration
def test_the_job_scores_with_models_from_the_bucket_and_swaps_to_the_next(s3, kafka, repo, samples, tmp_path):
    setup = ScoringSetup(kafka.bootstrap_servers, repo, PREFIX, tmp_path)
    rows = load_samples(samples["wine-pmml"])["inputs"]
    with RunningJob(setup.job_args(store_allow_list=PREFIX + "/"), tmp_path / "job.log") as job:
        setup.publish("s3-wine", "s3-wine", "pmml", samples["wine-pmml"] / "model.pmml")
        first = setup.send_records("s3-wine", rows, prefix="v1")
        assert len(setup.scores(expected=len(first), timeout_s=180)) == len(first), job.log_tail()
        setup.publish("s3-wine", "s3-wine", "tensorflow", samples["wine-tf"] / "saved_model")
        swapped, during = nudge_until_event(setup, pb.ModelEvent.AVAILABLE, "s3-wine", 2, rows, "during")
        second = setup.send_records("s3-wine", rows, prefix="v2")
        results = setup.scores(expected=len(first + during + second), timeout_s=120)
        job.assert_running()
    assert swapped.fetch_ms > 0
    assert sorted(r.record_id for r in results) == sorted(first + during + second)
    assert {r.model_version for r in results if r.record_id.startswith("v1-")} == {1}
    assert {r.model_version for r in results if r.record_id.startswith("v2-")} == {2}

