"""Signed models: the statement, the keys, and a signature checked by OpenSSL, not only by us."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from contract import scoring_pb2 as pb
from contract import signing
from infra.job_harness import RunningJob, ScoringSetup, nudge_until_event
from model_store import cli
from model_store.kafka_io import consume
from model_store.repository import ModelRepository
from tests.conftest import load_samples, results_including

Event = pb.ModelEvent


@pytest.fixture
def keys(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    signing.new_key_pair(ours)
    signing.new_key_pair(theirs)
    return signing.load_private_key(ours / "private.pem"), signing.load_trusted_keys([str(ours / "public.pem")]), \
        signing.load_private_key(theirs / "private.pem"), ours


def descriptor(**changes) -> pb.ModelDescriptor:
    d = pb.ModelDescriptor(name="wine", version=2, data_type="wine", model_type=pb.PMML, sha256="ab" * 32,
                           inline_bytes=b"<PMML/>")
    for k, v in changes.items():
        setattr(d, k, v)
    return d


def test_a_signed_model_verifies_and_any_change_to_what_it_is_does_not(keys):
    private, trusted, _, _ = keys
    d = descriptor()
    signing.sign(d, private)
    signing.verify(d, trusted)
    for field, value in (("name", "beer"), ("version", 3), ("data_type", "beer"), ("model_type", pb.ONNX),
                         ("sha256", "cd" * 32)):
        changed = pb.ModelDescriptor()
        changed.CopyFrom(d)
        setattr(changed, field, value)
        with pytest.raises(signing.SignatureError, match="is not for this name, version, data type"):
            signing.verify(changed, trusted)
    # What decides when, not what, is not signed: a rollback of the same version still verifies.
    d.action, d.rollout.mode = pb.ModelDescriptor.ROLLBACK, pb.RolloutPolicy.SHADOW
    signing.verify(d, trusted)


def test_unsigned_and_untrusted_models_are_refused_saying_so(keys):
    private, trusted, stranger, _ = keys
    with pytest.raises(signing.SignatureError, match="wine v2 is not signed.*1 trusted key.*--signing-key"):
        signing.verify(descriptor(), trusted)
    d = descriptor()
    signing.sign(d, stranger)
    with pytest.raises(signing.SignatureError, match="signed by key [0-9a-f]{16}..., which this job does not trust"):
        signing.verify(d, trusted)


def test_openssl_verifies_the_signature_over_the_statement(keys, tmp_path):
    """The signature is plain Ed25519 over the statement's bytes: OpenSSL agrees."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to check the signature independently")
    private, _, _, ours = keys
    d = descriptor()
    signing.sign(d, private)
    (tmp_path / "statement").write_bytes(signing.statement(d))
    (tmp_path / "signature").write_bytes(d.signature)
    check = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(ours / "public.pem"), "-rawin",
             "-in", str(tmp_path / "statement"), "-sigfile", str(tmp_path / "signature")]
    assert subprocess.run(check, capture_output=True, text=True).stdout.strip() == "Signature Verified Successfully"
    (tmp_path / "statement").write_bytes(signing.statement(descriptor(version=3)))
    assert subprocess.run(check, capture_output=True, text=True).returncode != 0
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(ours / "public.pem"), "-outform", "DER"],
                         capture_output=True, check=True).stdout
    assert d.signing_key_id == hashlib.sha256(der[-32:]).hexdigest()


def test_keys_on_disk(tmp_path):
    key = signing.new_key_pair(tmp_path / "k")
    assert (tmp_path / "k" / "private.pem").stat().st_mode & 0o777 == 0o600
    assert list(signing.load_trusted_keys([str(tmp_path / "k" / "public.pem")])) == [key]
    with pytest.raises(signing.SignatureError, match="cannot be read as a PEM public key"):
        signing.load_trusted_keys([str(tmp_path / "k")])  # the directory holds the private key too
    assert signing.load_trusted_keys([]) == {}


def test_publish_signs_and_a_rollback_carries_the_same_signature(keys, tmp_path, monkeypatch, samples):
    private, trusted, _, ours = keys
    sent: list[pb.ModelDescriptor] = []
    monkeypatch.setattr(cli, "announce", lambda bootstrap, topic, ds: sent.extend(ds) or len(sent))
    monkeypatch.setattr(cli, "warn_unless_compacted", lambda *a: None)
    repo = ModelRepository(tmp_path / "store")
    base = ["--store-root", str(repo.root), "--bootstrap-servers", "127.0.0.1:1"]
    model = str(samples["wine-pmml"] / "model.pmml")
    for _ in range(2):
        assert cli.main([*base, "publish", "--name", "wine", "--data-type", "wine", "--type", "pmml",
                         "--path", model, "--signing-key", str(ours / "private.pem")]) == 0
    assert cli.main([*base, "rollback", "--name", "wine", "--version", "1"]) == 0
    for d in sent:
        signing.verify(d, trusted)
    assert [d.version for d in sent] == [1, 2, 1] and sent[0].signature == sent[2].signature


@pytest.mark.integration
def test_the_job_runs_only_what_a_trusted_key_signed(kafka, store, samples, tmp_path):
    """A job with --trusted-keys: signed v1 serves; unsigned v2, v3 signed by a stranger and v5
    carrying v1's signature are REJECTED before anything is fetched; v4, signed and then given
    other inline bytes, fails its SHA-256 at the fetch. v1 serves every record throughout."""
    repo, server = store
    setup = ScoringSetup(kafka.bootstrap_servers, repo, server.base_url, tmp_path / "job")
    for who in ("ours", "theirs"):
        signing.new_key_pair(tmp_path / who)
    ours = signing.load_private_key(tmp_path / "ours" / "private.pem")
    model = samples["wine-pmml"] / "model.pmml"
    rows = load_samples(samples["wine-pmml"])["inputs"]
    name = "signed-wine"
    with RunningJob(setup.job_args(trusted_keys=str(tmp_path / "ours" / "public.pem")), tmp_path / "job.log"):
        setup.publish(name, name, "pmml", model, flags=["--signing-key", str(tmp_path / "ours" / "private.pem")])
        _, sent = nudge_until_event(setup, Event.AVAILABLE, name, 1, rows, "v1")
        setup.publish(name, name, "pmml", model)
        setup.publish(name, name, "pmml", model, flags=["--signing-key", str(tmp_path / "theirs" / "private.pem")])
        tampered = cli.descriptor_for(repo, repo.publish(name, model, pb.PMML, name), server.base_url, 10**7)
        signing.sign(tampered, ours)
        tampered.inline_bytes = tampered.inline_bytes.replace(b"</PMML>", b"<!-- not what was signed --></PMML>")
        tampered.size_bytes = len(tampered.inline_bytes)
        replayed = cli.descriptor_for(repo, repo.publish(name, model, pb.PMML, name), server.base_url, 0)
        first = pb.ModelDescriptor.FromString(next(v for v in consume(setup.bootstrap, setup.topics["models"], 1, 10)))
        replayed.signature, replayed.signing_key_id = first.signature, first.signing_key_id
        setup.announce([tampered.SerializeToString(), replayed.SerializeToString()])
        error, more = nudge_until_event(setup, Event.ERROR, name, 4, rows, "v4")
        sent += more + setup.send_records(name, rows, "after")
        reasons = {v: setup.find_event(Event.REJECTED, name, v).reason for v in (2, 3, 5)}
        results = results_including(setup, name, sent, timeout_s=90)
    assert "signed-wine v2 is not signed" in reasons[2]
    assert "which this job does not trust" in reasons[3]
    assert "signed-wine v5: the signature by key" in reasons[5] and "replayed" in reasons[5]
    assert "SHA-256" in error.reason and "keeps its current model" in error.reason
    assert {r.record_id for r in results} >= set(sent) and {r.model_version for r in results} == {1}
