"""The versioned model store, its HTTP server, the fetcher's checks, and the CLI."""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from contract import scoring_pb2 as pb
from model_store import cli
from model_store.fetcher import ArtifactFetcher, FetchError, FetchPolicy
from model_store.repository import ModelRepository
from model_store.server import ModelStoreServer
from scoring.batch import score_batch
from scoring.loader import load_servable, parse_descriptor
from tests.conftest import load_samples
from tests.test_backends import assert_close


@pytest.fixture
def repo(tmp_path) -> ModelRepository:
    return ModelRepository(tmp_path / "store")


@pytest.fixture
def store(repo):
    repo.root.mkdir(parents=True, exist_ok=True)
    with ModelStoreServer(repo.root) as server:
        yield server


def fetcher_for(tmp_path: Path, store: ModelStoreServer, **policy) -> ArtifactFetcher:
    return ArtifactFetcher(tmp_path / "cache", FetchPolicy.parse([store.base_url + "/"], **policy))


def located(repo, stored, base_url) -> pb.ModelDescriptor:
    return cli.descriptor_for(repo, stored, base_url, inline_max_bytes=0)


def test_versions_grow_per_name_with_metadata(repo, samples):
    pmml = samples["wine-pmml"] / "model.pmml"
    first = repo.publish("wine", pmml, pb.PMML, "wine")
    second = repo.publish("wine", pmml, pb.PMML, "wine")
    other = repo.publish("digits", samples["digits-tf"] / "saved_model", pb.TENSORFLOW_SAVED_MODEL, "image")
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.sha256 == hashlib.sha256(pmml.read_bytes()).hexdigest()
    assert first.size_bytes == pmml.stat().st_size
    assert repo.names() == ["digits", "wine"]
    assert [m.version for m in repo.versions("wine")] == [1, 2]
    assert (repo.root / "digits" / "1" / "model.tar.gz").exists()
    with pytest.raises(KeyError, match="has no version 7"):
        repo.get("wine", 7)
    with pytest.raises(ValueError, match="must match"):
        repo.publish("../evil", pmml, pb.PMML, "wine")


def test_fetch_over_http_verifies_and_caches(repo, store, samples, tmp_path):
    stored = repo.publish("wine", samples["wine-pmml"] / "model.pmml", pb.PMML, "wine")
    fetcher = fetcher_for(tmp_path, store)
    d = located(repo, stored, store.base_url)
    first = fetcher.fetch(d)
    assert not first.from_cache
    assert first.path.read_bytes() == repo.artifact_path(stored).read_bytes()
    assert fetcher.fetch(d).from_cache


def test_subtasks_fetching_and_unpacking_one_artifact_at_once_all_get_it(repo, store, samples, tmp_path):
    """Subtasks share the cache: as threads of one process on a MiniCluster (one pid)."""
    from scoring.backends.tensorflow import unpack

    stored = repo.publish("wine", samples["wine-tf"] / "saved_model", pb.TENSORFLOW_SAVED_MODEL, "wine")
    d = located(repo, stored, store.base_url)
    fetchers = [fetcher_for(tmp_path, store) for _ in range(8)]
    results, errors = [], []

    def fetch_and_unpack(fetcher):
        try:
            results.append(unpack(fetcher.fetch(d).path))
        except Exception as err:  # noqa: BLE001 - any failure is the finding
            errors.append(err)

    threads = [threading.Thread(target=fetch_and_unpack, args=(f,)) for f in fetchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 8 and len(set(results)) == 1 and (results[0] / "saved_model.pb").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".partial" in p.name or p.name.startswith(".")]


@pytest.mark.parametrize("field,value,message", [
    ("sha256", "0" * 64, "SHA-256"),
    ("size_bytes", 123, "bytes"),
])
def test_fetch_refuses_a_mismatched_artifact(repo, store, samples, tmp_path, field, value, message):
    stored = repo.publish("wine", samples["wine-pmml"] / "model.pmml", pb.PMML, "wine")
    d = located(repo, stored, store.base_url)
    setattr(d, field, value)
    with pytest.raises(FetchError, match=message):
        fetcher_for(tmp_path, store).fetch(d)
    assert not list((tmp_path / "cache").rglob("model.pmml"))


def test_the_store_serves_no_hidden_file_however_its_name_is_written(repo, store):
    import requests

    (repo.root / ".secret").write_text("not for fetching")
    (repo.root / "wine").mkdir(exist_ok=True)
    (repo.root / "wine" / ".hidden").write_text("nor this")
    for path in ("/.secret", "/%2esecret", "/%2Esecret", "/wine/%2ehidden", "/wine/./%2ehidden?x=1"):
        assert requests.get(store.base_url + path, timeout=5).status_code == 404, path


def test_mismatched_bytes_are_never_visible_in_the_cache_and_the_error_does_not_describe_them(
        repo, store, samples, tmp_path, monkeypatch):
    """The download streams into a private temporary file; the cache's entry appears only
    once its bytes are verified. Checked while the bytes arrive, not only after."""
    stored = repo.publish("wine", samples["wine-pmml"] / "model.pmml", pb.PMML, "wine")
    d = located(repo, stored, store.base_url)
    d.sha256 = "0" * 64
    fetcher = fetcher_for(tmp_path, store)
    target = tmp_path / "cache" / d.sha256 / "model.pmml"
    seen_while_streaming = []
    real_capped = fetcher._capped

    def watching(chunks, *args):
        for chunk in real_capped(chunks, *args):
            seen_while_streaming.append(target.exists())
            temporaries = [p for p in target.parent.iterdir() if p.name.startswith(".model.pmml.")]
            assert [p.stat().st_mode & 0o777 for p in temporaries] == [0o600]
            yield chunk
    monkeypatch.setattr(fetcher, "_capped", watching)
    with pytest.raises(FetchError, match="does not match the descriptor's SHA-256 and size") as refused:
        fetcher.fetch(d)
    assert seen_while_streaming and not any(seen_while_streaming)
    assert not list(target.parent.iterdir())
    assert stored.sha256 not in str(refused.value)  # what the store sent is not described


def test_a_cache_entry_whose_bytes_changed_is_fetched_again(repo, store, samples, tmp_path):
    stored = repo.publish("wine", samples["wine-pmml"] / "model.pmml", pb.PMML, "wine")
    d = located(repo, stored, store.base_url)
    fetcher = fetcher_for(tmp_path, store)
    path = fetcher.fetch(d).path
    path.write_bytes(b"<PMML>swapped in the cache</PMML>")
    again = fetcher.fetch(d)
    assert not again.from_cache and again.path.read_bytes() == repo.artifact_path(stored).read_bytes()


def test_a_cache_others_can_write_to_or_a_link_is_refused(repo, store, samples, tmp_path):
    stored = repo.publish("wine", samples["wine-pmml"] / "model.pmml", pb.PMML, "wine")
    d = located(repo, stored, store.base_url)
    (tmp_path / "shared").mkdir(mode=0o777)
    (tmp_path / "shared").chmod(0o777)
    (tmp_path / "link").symlink_to(tmp_path / "private")
    (tmp_path / "private").mkdir(mode=0o700)
    for cache, why in (("shared", "mode 777"), ("link", "a symbolic link")):
        fetcher = ArtifactFetcher(tmp_path / cache, FetchPolicy.parse([store.base_url + "/"]))
        with pytest.raises(FetchError, match=f"model cache .*{why}.*no one else may write"):
            fetcher.fetch(d)
    made = ArtifactFetcher(tmp_path / "new" / "cache", FetchPolicy.parse([store.base_url + "/"]))
    made.fetch(d)
    assert (tmp_path / "new" / "cache").stat().st_mode & 0o777 == 0o700


def test_a_sha256_that_is_not_hex_cannot_name_a_path(repo, store, tmp_path):
    d = pb.ModelDescriptor(name="m", data_type="t", model_type=pb.PMML, version=1,
                           location=store.base_url + "/m/1/model.pmml", sha256="../" * 21 + "x", size_bytes=10)
    with pytest.raises(FetchError, match="64 hex digits"):
        fetcher_for(tmp_path, store).fetch(d)


class TricklingStore:
    """An HTTP server sending `body` a byte at a time, `pause_s` apart; it keeps the headers
    of each request it answers."""

    def __init__(self, body: bytes, pause_s: float = 0.0) -> None:
        outer = self
        self.headers: list[dict[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.headers.append(dict(self.headers))
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(pause_s)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def descriptor(self, body: bytes) -> pb.ModelDescriptor:
        return pb.ModelDescriptor(name="m", data_type="t", model_type=pb.PMML, version=1,
                                  location=self.base_url + "/m/1/model.pmml",
                                  sha256=hashlib.sha256(body).hexdigest(), size_bytes=len(body))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_proxy_variables_and_netrc_are_not_used(tmp_path, monkeypatch):
    """requests alone would send the download through $HTTP_PROXY (a dead port here) and
    .netrc's password to the store."""
    body = b"<PMML/>"
    served = TricklingStore(body)
    try:
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
        monkeypatch.setenv("NO_PROXY", "")
        (tmp_path / "netrc").write_text("machine 127.0.0.1 login user password secret\n")
        monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
        fetcher = ArtifactFetcher(tmp_path / "cache", FetchPolicy.parse([served.base_url + "/"]))
        assert fetcher.fetch(served.descriptor(body)).path.read_bytes() == body
        assert served.headers and all("Authorization" not in h for h in served.headers)
    finally:
        served.close()


def test_a_fetch_has_an_overall_deadline(tmp_path):
    body = b"x" * 40
    slow = TricklingStore(body, pause_s=0.1)  # each read is quick; the whole takes 4 s
    try:
        fetcher = ArtifactFetcher(tmp_path / "cache", FetchPolicy.parse([slow.base_url + "/"], deadline_s=1))
        started = time.monotonic()
        with pytest.raises(FetchError, match="longer than its deadline of 1s"):
            fetcher.fetch(slow.descriptor(body))
        assert time.monotonic() - started < 2.5
    finally:
        slow.close()


def test_an_archive_past_the_entry_or_size_limit_is_refused_before_unpacking(tmp_path):
    import tarfile

    from scoring.backends.tensorflow import unpack
    from scoring.errors import ModelLoadError

    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(20):
            (tmp_path / f"f{i}").write_bytes(b"x" * 100)
            tar.add(tmp_path / f"f{i}", arcname=f"saved/f{i}")
    for limits in ({"max_entries": 10}, {"max_bytes": 1000}):
        with pytest.raises(ModelLoadError, match="refused before unpacking"):
            unpack(archive, **limits)
        assert not list(tmp_path.glob("model.tar.gz.d*"))


def test_fetch_refuses_an_oversize_artifact(repo, store, samples, tmp_path):
    stored = repo.publish("wine", samples["wine-pmml"] / "model.pmml", pb.PMML, "wine")
    d = located(repo, stored, store.base_url)
    with pytest.raises(FetchError, match="over the limit"):
        fetcher_for(tmp_path, store, max_bytes=1000).fetch(d)
    inline = cli.descriptor_for(repo, stored, store.base_url, inline_max_bytes=10**9)
    with pytest.raises(FetchError, match="over the limit"):
        fetcher_for(tmp_path, store, max_bytes=1000).fetch(inline)


@pytest.mark.parametrize("location", [
    "http://169.254.169.254/latest/meta-data/iam",
    "file:///etc/passwd",
    "http://example.com/wine/1/model.pmml",
    "gopher://127.0.0.1/x",
])
def test_fetch_refuses_locations_outside_the_allow_list(store, tmp_path, location):
    d = pb.ModelDescriptor(name="m", data_type="t", model_type=pb.PMML, version=1,
                           location=location, sha256="0" * 64, size_bytes=10)
    with pytest.raises(FetchError, match="allow-list|not supported"):
        fetcher_for(tmp_path, store).fetch(d)


def test_allow_list_is_checked_after_normalising(store, tmp_path):
    fetcher = fetcher_for(tmp_path, store)
    port = store.port
    with pytest.raises(FetchError, match="outside the allow-list"):  # user-info trick: the host is 169.254.169.254
        fetcher.check_allowed(f"http://127.0.0.1:{port}@169.254.169.254/x")
    with pytest.raises(FetchError, match="outside the allow-list|invalid port"):  # port prefix trick: another port
        fetcher.check_allowed(f"http://127.0.0.1:{port}0/x")
    # dot segments are resolved before the prefix is compared, and stay on the store
    assert (fetcher.check_allowed(f"http://127.0.0.1:{port}/models/../../etc/passwd")
            == f"http://127.0.0.1:{port}/etc/passwd")
    assert fetcher.check_allowed(f"HTTP://127.0.0.1:{port}/wine/1/model.pmml") == f"http://127.0.0.1:{port}/wine/1/model.pmml"


def test_file_locations_only_inside_allowed_roots(repo, samples, tmp_path):
    stored = repo.publish("wine", samples["wine-pmml"] / "model.pmml", pb.PMML, "wine")
    fetcher = ArtifactFetcher(tmp_path / "cache", FetchPolicy.parse([repo.root.as_uri() + "/"]))
    d = located(repo, stored, repo.root.as_uri())
    assert fetcher.fetch(d).path.read_bytes() == repo.artifact_path(stored).read_bytes()
    escape = tmp_path / "outside.pmml"
    escape.write_bytes(b"x")
    (repo.root / "link.pmml").symlink_to(escape)
    for location in [repo.root.as_uri() + "/../outside.pmml", repo.root.as_uri() + "/link.pmml"]:
        d.location = location
        with pytest.raises(FetchError, match="allow-list"):
            fetcher.fetch(d)


class FlakyStore:
    """An HTTP server answering with a fixed status, counting requests."""

    def __init__(self, status: int, redirect_to: str = "") -> None:
        outer = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests += 1
                self.send_response(status)
                if redirect_to:
                    self.send_header("Location", redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("status,attempts", [(500, 3), (503, 3), (404, 1), (302, 1)])
def test_retries_are_bounded_and_only_for_transient_failures(tmp_path, status, attempts):
    flaky = FlakyStore(status, redirect_to="http://169.254.169.254/")
    try:
        fetcher = ArtifactFetcher(tmp_path / "cache", FetchPolicy.parse([flaky.base_url + "/"], backoff_s=0.01))
        d = pb.ModelDescriptor(name="m", data_type="t", model_type=pb.PMML, version=1,
                               location=flaky.base_url + "/m/1/model.pmml", sha256="0" * 64, size_bytes=10)
        with pytest.raises(FetchError, match=f"HTTP {status}"):
            fetcher.fetch(d)
        assert flaky.requests == attempts
    finally:
        flaky.close()


def test_a_store_that_is_down_fails_after_bounded_retries(tmp_path):
    from infra.procs import free_port

    base = f"http://127.0.0.1:{free_port()}"
    fetcher = ArtifactFetcher(tmp_path / "cache", FetchPolicy.parse([base + "/"], backoff_s=0.01))
    d = pb.ModelDescriptor(name="m", data_type="t", model_type=pb.PMML, version=1,
                           location=base + "/m/1/model.pmml", sha256="0" * 64, size_bytes=10)
    with pytest.raises(FetchError, match="failed 3 times; last"):
        fetcher.fetch(d)


def test_inline_descriptor_verified(tmp_path):
    fetcher = ArtifactFetcher(tmp_path / "cache", FetchPolicy.parse(["http://127.0.0.1:1/"]))
    d = pb.ModelDescriptor(name="m", data_type="t", model_type=pb.PMML, version=1,
                           inline_bytes=b"<PMML/>", sha256="f" * 64)
    with pytest.raises(FetchError, match="SHA-256"):
        fetcher.fetch(d)


@pytest.mark.integration
def test_publish_to_kafka_fetch_from_http_load_and_score(kafka, repo, store, samples, tmp_path, capsys):
    """publish -> descriptor on the real models topic -> fetch from the real store -> score."""
    from contract.topics import MODELS_TOPIC_CONFIG
    from infra.topics import create_topics, unique_topics
    from model_store.kafka_io import consume

    topics = unique_topics("models")
    create_topics(kafka.bootstrap_servers, topics.values(), configs={topics["models"]: MODELS_TOPIC_CONFIG})
    common = ["--store-root", str(repo.root), "--bootstrap-servers", kafka.bootstrap_servers]
    announce = ["--topic", topics["models"], "--base-url", store.base_url, "--inline-max-bytes", "1000"]
    assert cli.main([*common, "publish", "--name", "wine-tf", "--data-type", "wine", "--type", "tensorflow",
                     "--path", str(samples["wine-tf"] / "saved_model"), *announce]) == 0
    assert cli.main([*common, "publish", "--name", "wine-tf", "--data-type", "wine", "--type", "tensorflow",
                     "--path", str(samples["wine-tf"] / "saved_model"), *announce]) == 0
    assert cli.main([*common, "rollback", "--name", "wine-tf", "--version", "1", *announce]) == 0
    assert cli.main([*common, "list"]) == 0
    assert "wine-tf\tv2" in capsys.readouterr().out

    messages = [parse_descriptor(m) for m in consume(kafka.bootstrap_servers, topics["models"], expected=3)]
    assert [(m.version, m.action) for m in messages] == [
        (1, pb.ModelDescriptor.DEPLOY), (2, pb.ModelDescriptor.DEPLOY), (1, pb.ModelDescriptor.ROLLBACK)]
    assert all(m.location.startswith(store.base_url) for m in messages)

    servable = load_servable(messages[-1], fetcher_for(tmp_path, store))
    assert servable.key == ("wine-tf", 1) and servable.load_ms > 0
    doc = load_samples(samples["wine-tf"])
    for outcome, expected in zip(score_batch(servable.model, doc["inputs"]), doc["expected"], strict=True):
        assert_close(outcome.outputs, expected)


@pytest.mark.integration
def test_send_sample_records(kafka, samples):
    from infra.topics import create_topics, unique_topics
    from model_store.kafka_io import consume

    topics = unique_topics("data")
    create_topics(kafka.bootstrap_servers, topics.values())
    assert cli.main(["--bootstrap-servers", kafka.bootstrap_servers, "send", "--data-type", "wine",
                     "--samples", str(samples["wine-pmml"] / "samples.json"), "--count", "40",
                     "--data-topic", topics["data"], "--id-prefix", "t"]) == 0
    records = [pb.DataRecord.FromString(v) for v in consume(kafka.bootstrap_servers, topics["data"], expected=40)]
    assert sorted(r.record_id for r in records) == sorted(f"t-{i}" for i in range(40))
    first_inputs = load_samples(samples["wine-pmml"])["inputs"][0]
    by_id = {r.record_id: r for r in records}
    assert {k: v.double_value for k, v in by_id["t-0"].inputs.items()} == pytest.approx(first_inputs)
