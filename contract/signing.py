"""Who may change what runs: an Ed25519 signature over a whole model descriptor.

The signed statement is every field of the descriptor but the signature itself: the model
(name, version, data type, type, SHA-256, inline bytes by their SHA-256, location, size) and
what decides when and how it serves (action, rollout policy and gate, signature name,
explanation share, publish time, sequence). Changing any of them breaks the signature, and a
signature cannot be moved to another descriptor. A whole old descriptor replayed (an old
ROLLBACK, say) still verifies: its `sequence` refuses it, since a job with trusted keys keeps
the highest sequence it accepted per data type (`scoring.policy.accept`).

A revocation list (JSON: {"keys": [key ids], "models": ["name:version"]}) names keys and
model versions that must not run any more, whoever signed them.

Keys are Ed25519 in PEM (`model-store keygen`). A key's id is the hex SHA-256 of its raw
public bytes; `openssl pkey -pubin -in public.pem -outform DER | tail -c 32 | sha256sum`
gives the same.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf import json_format
from google.protobuf.unknown_fields import UnknownFieldSet

from contract import scoring_pb2 as pb

PURPOSE = "flink-model-scoring descriptor signature v2"
NOT_SIGNED = ("signature", "signing_key_id")


class SignatureError(ValueError):
    """Why a descriptor's signature does not let its model run."""


@dataclass(frozen=True)
class Trust:
    """What a job trusts: public keys by id, and what was revoked since they signed it."""

    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    revoked_keys: frozenset[str] = frozenset()
    revoked_models: frozenset[tuple[str, int]] = frozenset()

    @property
    def required(self) -> bool:
        """Only signed descriptors are taken: the job was given trusted keys."""
        return bool(self.keys)


def statement(d: pb.ModelDescriptor) -> bytes:
    """The bytes a signature covers: the descriptor but its signature, as proto3 JSON
    (json_format, proto field names) with sorted keys and no spaces; inline bytes are
    replaced by their hex SHA-256 under "inline_sha256"."""
    body = pb.ModelDescriptor()
    body.CopyFrom(d)
    for name in NOT_SIGNED:
        body.ClearField(name)
    inline = body.inline_bytes if body.WhichOneof("artifact") == "inline_bytes" else None
    if inline is not None:
        body.ClearField("inline_bytes")
    doc = json_format.MessageToDict(body, preserving_proto_field_name=True)
    if inline is not None:
        doc["inline_sha256"] = hashlib.sha256(inline).hexdigest()
    return json.dumps({"purpose": PURPOSE, "descriptor": doc}, sort_keys=True, separators=(",", ":")).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def sign(d: pb.ModelDescriptor, private_key: Ed25519PrivateKey) -> None:
    """Signs the descriptor in place, as it is now: set every other field first. Its sha256
    must be set: through it the signature vouches for the artifact's bytes."""
    if not d.sha256:
        raise SignatureError(f"{d.name} v{d.version} has no sha256 to sign")
    d.signing_key_id = key_id(private_key.public_key())
    d.signature = private_key.sign(statement(d))


def verify(d: pb.ModelDescriptor, trust: Trust) -> None:
    """Raises SignatureError unless the descriptor may run: nothing in it is revoked and, if
    the job trusts keys, one of them signed exactly this descriptor."""
    label = f"{d.name} v{d.version}"
    if (d.name, d.version) in trust.revoked_models:
        raise SignatureError(f"{label} is revoked (the job's --revoked list): it may not run")
    if d.signing_key_id and d.signing_key_id.lower() in trust.revoked_keys:
        raise SignatureError(f"{label} is signed by key {d.signing_key_id[:16]}..., which is revoked "
                             "(the job's --revoked list): sign it again with a key the job trusts")
    if not trust.required:
        return
    if not d.signature:
        raise SignatureError(f"{label} is not signed, and this job runs only models signed by "
                             f"one of its {len(trust.keys)} trusted key(s): publish it with --signing-key")
    key = trust.keys.get(d.signing_key_id)
    if key is None:
        raise SignatureError(f"{label} is signed by key {d.signing_key_id[:16] or '(no id)'}..., which this "
                             "job does not trust (--trusted-keys)")
    if not d.sha256:
        raise SignatureError(f"{label} carries no sha256: nothing ties its signature to its bytes")
    if len(UnknownFieldSet(d)):
        raise SignatureError(f"{label} carries fields this job does not know: it cannot tell what they "
                             "would change, so it does not run it (upgrade the job, or publish without them)")
    try:
        key.verify(d.signature, statement(d))
    except InvalidSignature:
        raise SignatureError(f"{label}: the signature by key {d.signing_key_id[:16]}... is not for this "
                             "descriptor: a field was altered after signing (its action, rollout, "
                             "artifact...), or the signature was replayed from another one") from None


# ---- keys on disk --------------------------------------------------------------------------------
def new_key_pair(directory: Path) -> str:
    """Writes private.pem (created with mode 600) and public.pem; returns the key id. Refuses
    to overwrite a key: what it signed would no longer verify, and an old file keeps its mode."""
    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    secret = directory / "private.pem"
    try:
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SignatureError(f"{secret} exists: a new key there would replace it. Choose another "
                             "directory, or remove the old key first") from None
    with os.fdopen(fd, "wb") as f:
        f.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    (directory / "public.pem").write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_id(private.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 private key (make one with `model-store keygen`)")
    return key


def load_trusted_keys(paths: Iterable[str]) -> dict[str, Ed25519PublicKey]:
    """Public keys by id, from PEM files or directories of *.pem files. Paths that hold no
    key are an error: they would turn verification off without a word."""
    paths = list(paths)
    files = []
    for item in paths:
        path = Path(item)
        files += sorted(path.glob("*.pem")) if path.is_dir() else [path]
    keys = {}
    for file in files:
        try:
            key = serialization.load_pem_public_key(file.read_bytes())
        except (OSError, ValueError) as err:
            raise SignatureError(f"trusted key {file} cannot be read as a PEM public key: {err}") from err
        if not isinstance(key, Ed25519PublicKey):
            raise SignatureError(f"trusted key {file} is not an Ed25519 public key")
        keys[key_id(key)] = key
    if paths and not keys:
        raise SignatureError(f"--trusted-keys {','.join(paths)} holds no public key (*.pem); with none "
                             "the job would run unsigned models. Give the keys, or no --trusted-keys")
    return keys


def load_revocations(paths: Iterable[str]) -> tuple[frozenset[str], frozenset[tuple[str, int]]]:
    """Revoked key ids and (name, version) pairs, from JSON files
    {"keys": ["<key id>", ...], "models": ["<name>:<version>", ...]}."""
    keys: set[str] = set()
    models: set[tuple[str, int]] = set()
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text())
            keys.update(str(k).lower() for k in doc.get("keys", []))
            for entry in doc.get("models", []):
                name, _, version = str(entry).rpartition(":")
                if not name:
                    raise ValueError(f"model entry {entry!r} is not NAME:VERSION")
                models.add((name, int(version)))
        except (OSError, ValueError, AttributeError) as err:
            raise SignatureError(f"revocation list {path} cannot be read ({err}); it must be JSON "
                                 '{"keys": ["<key id>"], "models": ["<name>:<version>"]}') from err
    return frozenset(keys), frozenset(models)


def load_trust(trusted_keys: Iterable[str], revoked: Iterable[str] = ()) -> Trust:
    revoked_keys, revoked_models = load_revocations(revoked)
    return Trust(load_trusted_keys(trusted_keys), revoked_keys, revoked_models)
