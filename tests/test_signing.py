"""Signed models: the statement, the keys, and a signature checked by OpenSSL, not only by us."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from contract import scoring_pb2 as pb
from contract import signing
from infra.job_harness import RunningJob, ScoringSetup, nudge_until_event
from model_store import cli
from model_store.kafka_io import consume
from model_store.repository import ModelRepository
from scoring.policy import accept
from tests.conftest import load_samples, results_including

Event = pb.ModelEvent


@pytest.fixture
def keys(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    signing.new_key_pair(ours)
    signing.new_key_pair(theirs)
    return signing.load_private_key(ours / "private.pem"), signing.load_trust([str(ours / "public.pem")]), \
        signing.load_private_key(theirs / "private.pem"), ours


def descriptor(**changes) -> pb.ModelDescriptor:
    d = pb.ModelDescriptor(name="wine", version=2, data_type="wine", model_type=pb.PMML, sha256="ab" * 32,
                           inline_bytes=b"<PMML/>")
    for k, v in changes.items():
        setattr(d, k, v)
    return d


def changed_copies(d: pb.ModelDescriptor):
    """(field path, a copy of `d` with that one field changed), for every field a signature
    covers, nested ones included: read off the schema, so a field added later is covered too."""
    def leaves(message, prefix=""):
        for f in message.DESCRIPTOR.fields:
            if not prefix and f.name in signing.NOT_SIGNED:
                continue
            if f.message_type is not None:
                yield from leaves(getattr(message, f.name), f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", f

    def other(f, value):
        if f.type == f.TYPE_BOOL:
            return not value
        if f.type in (f.TYPE_STRING,):
            return value + "x"
        if f.type == f.TYPE_BYTES:
            return value + b"x"
        if f.enum_type is not None:
            return (value + 1) % len(f.enum_type.values)
        return value + 1

    for path, f in leaves(d):
        copy = pb.ModelDescriptor()
        copy.CopyFrom(d)
        *parents, name = path.split(".")
        holder = copy
        for parent in parents:
            holder = getattr(holder, parent)
        setattr(holder, name, other(f, getattr(holder, name)))
        yield path, copy


def test_a_signed_descriptor_verifies_and_any_change_to_it_does_not(keys):
    private, trusted, _, _ = keys
    d = descriptor(action=pb.ModelDescriptor.ROLLBACK, sequence=7, publish_time_ms=1, explain_fraction=0.1)
    d.rollout.gate.min_records = 10
    signing.sign(d, private)
    signing.verify(d, trusted)
    checked = []
    for path, changed in changed_copies(d):
        with pytest.raises(signing.SignatureError, match="a field was altered after signing"):
            signing.verify(changed, trusted)
        checked.append(path)
    # What used to be left out: when, how and where a signed model serves.
    assert {"action", "sequence", "publish_time_ms", "rollout.mode", "rollout.canary_percent",
            "rollout.gate.min_agreement", "rollout.gate.manual_promotion", "inline_bytes", "location",
            "size_bytes", "signature_name", "explain_fraction"} <= set(checked)


def test_a_descriptor_with_fields_the_job_does_not_know_is_refused(keys):
    private, trusted, _, _ = keys
    d = descriptor()
    signing.sign(d, private)
    unknown_field_99 = bytes([0x98, 0x06, 0x01])  # field 99, varint 1
    extended = pb.ModelDescriptor.FromString(d.SerializeToString() + unknown_field_99)
    with pytest.raises(signing.SignatureError, match="carries fields this job does not know"):
        signing.verify(extended, trusted)


def test_revoked_keys_and_versions_are_refused_whoever_signed_them(keys, tmp_path):
    private, trusted, _, ours = keys
    d = descriptor()
    signing.sign(d, private)
    lists = tmp_path / "revoked.json"
    lists.write_text(json.dumps({"keys": [d.signing_key_id.upper()], "models": []}))
    trust = signing.load_trust([str(ours / "public.pem")], [str(lists)])
    with pytest.raises(signing.SignatureError, match="which is revoked"):
        signing.verify(d, trust)
    lists.write_text(json.dumps({"models": ["wine:2"]}))
    trust = signing.load_trust([str(ours / "public.pem")], [str(lists)])
    with pytest.raises(signing.SignatureError, match="wine v2 is revoked"):
        signing.verify(d, trust)
    signing.verify(descriptor(version=3), signing.load_trust([], [str(lists)]))  # unsigned job: only revocations
    with pytest.raises(signing.SignatureError, match="wine v2 is revoked"):
        signing.verify(descriptor(), signing.load_trust([], [str(lists)]))
    lists.write_text(json.dumps({"models": ["wine"]}))
    with pytest.raises(signing.SignatureError, match="is not NAME:VERSION"):
        signing.load_trust([], [str(lists)])


def test_unsigned_and_untrusted_models_are_refused_saying_so(keys):
    _, trusted, stranger, _ = keys
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
    (tmp_path / "empty").mkdir()
    with pytest.raises(signing.SignatureError, match="holds no public key.*would run unsigned models"):
        signing.load_trusted_keys([str(tmp_path / "empty")])


def test_keygen_does_not_overwrite_a_key(tmp_path):
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "private.pem").write_bytes(b"an old key, mode 644")
    with pytest.raises(signing.SignatureError, match="private.pem exists"):
        signing.new_key_pair(tmp_path / "k")
    assert (tmp_path / "k" / "private.pem").read_bytes() == b"an old key, mode 644"


def test_publish_and_rollback_are_each_signed_with_a_sequence_of_their_own(keys, tmp_path, monkeypatch, samples):
    private, trusted, _, ours = keys
    sent: list[pb.ModelDescriptor] = []
    monkeypatch.setattr(cli, "announce", lambda bootstrap, topic, ds: sent.extend(ds) or len(sent))
    monkeypatch.setattr(cli, "warn_unless_compacted", lambda *a: None)
    repo = ModelRepository(tmp_path / "store")
    base = ["--store-root", str(repo.root), "--bootstrap-servers", "127.0.0.1:1"]
    model = str(samples["wine-pmml"] / "model.pmml")
    key = ["--signing-key", str(ours / "private.pem")]
    for _ in range(2):
        assert cli.main([*base, "publish", "--name", "wine", "--data-type", "wine", "--type", "pmml",
                         "--path", model, *key]) == 0
    assert cli.main([*base, "rollback", "--name", "wine", "--version", "1", *key]) == 0
    assert cli.main([*base, "rollback", "--name", "wine", "--version", "1"]) == 0  # no key: unsigned
    for d in sent[:3]:
        signing.verify(d, trusted)
    assert [d.version for d in sent] == [1, 2, 1, 1] and not sent[3].signature
    assert sent[0].signature != sent[2].signature
    assert [d.sequence for d in sent] == sorted({d.sequence for d in sent})
    # The job's high-water mark: after the rollback, v2's own signed DEPLOY cannot come back.
    assert accept(sent[2], sent[1], sequenced=True) is not None
    assert "sequence" in accept(sent[2], sent[0], sequenced=True)


@pytest.mark.integration
def test_the_job_runs_only_what_a_trusted_key_signed(kafka, store, samples, tmp_path):
    """A job with --trusted-keys: signed v1 serves; unsigned v2, v3 signed by a stranger and v5
    carrying v1's signature are REJECTED before anything is fetched, and so is v4, signed and
    then given other inline bytes (the signature covers them); an old signed ROLLBACK sent
    again is REJECTED by its sequence. v1 serves every record throughout."""
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
        # Two signed rollbacks to v1, then the first one again: an old signed statement.
        signed_by_us = ["--signing-key", str(tmp_path / "ours" / "private.pem")]
        for _ in range(2):
            assert setup.cli("rollback", "--name", name, "--version", "1", "--topic", setup.topics["models"],
                             "--base-url", server.base_url, *signed_by_us) == 0
        rollbacks = sorted((d for d in map(pb.ModelDescriptor.FromString,
                                           consume(setup.bootstrap, setup.topics["models"], 7, 10))
                            if d.action == pb.ModelDescriptor.ROLLBACK), key=lambda d: d.sequence)
        setup.announce([rollbacks[0].SerializeToString()])
        replay = setup.wait_for_event(Event.REJECTED, name, 1, timeout_s=60)
        sent += setup.send_records(name, rows, "after")
        reasons = {v: setup.find_event(Event.REJECTED, name, v).reason for v in (2, 3, 4, 5)}
        results = results_including(setup, name, sent, timeout_s=90)
    assert "signed-wine v2 is not signed" in reasons[2]
    assert "which this job does not trust" in reasons[3]
    assert "signed-wine v5: the signature by key" in reasons[5] and "replayed" in reasons[5]
    assert f"sequence {rollbacks[0].sequence}, not above {rollbacks[1].sequence}" in replay.reason
    assert "signed-wine v4: the signature by key" in reasons[4] and "altered after signing" in reasons[4]
    assert {r.record_id for r in results} >= set(sent) and {r.model_version for r in results} == {1}
