"""Who made a model: an Ed25519 signature over what a descriptor says the model is.

The signed statement binds the artifact's SHA-256 to the model's name, version, data type and
type, so a signature can neither vouch for other bytes nor be replayed for another version or
data type. The job checks a descriptor's signature against its trusted public keys before it
fetches or loads anything; the fetcher then checks the bytes against the signed SHA-256.
The action (deploy, rollback, promote) and the rollout policy are not signed: they decide when
a signed model serves, not what runs.

Keys are Ed25519 in PEM (`model-store keygen`). A key's id is the hex SHA-256 of its raw
public bytes; `openssl pkey -pubin -in public.pem -outform DER | tail -c 32 | sha256sum`
gives the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contract import scoring_pb2 as pb

PURPOSE = "flink-model-scoring model signature v1"


class SignatureError(ValueError):
    """Why a descriptor's signature does not let its model run."""


def statement(d: pb.ModelDescriptor) -> bytes:
    """The bytes a signature covers: canonical JSON (sorted keys, no spaces)."""
    return json.dumps({"purpose": PURPOSE, "name": d.name, "version": d.version, "data_type": d.data_type,
                       "model_type": pb.ModelType.Name(d.model_type) if d.model_type in pb.ModelType.values()
                       else str(d.model_type), "sha256": d.sha256.lower()},
                      sort_keys=True, separators=(",", ":")).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def sign(d: pb.ModelDescriptor, private_key: Ed25519PrivateKey) -> None:
    """Signs the descriptor in place. Its sha256 must be set: the signature vouches for it."""
    if not d.sha256:
        raise SignatureError(f"{d.name} v{d.version} has no sha256 to sign")
    d.signature = private_key.sign(statement(d))
    d.signing_key_id = key_id(private_key.public_key())


def verify(d: pb.ModelDescriptor, trusted: dict[str, Ed25519PublicKey]) -> None:
    """Raises SignatureError unless a trusted key signed exactly this model."""
    label = f"{d.name} v{d.version}"
    if not d.signature:
        raise SignatureError(f"{label} is not signed, and this job runs only models signed by "
                             f"one of its {len(trusted)} trusted key(s): publish it with --signing-key")
    key = trusted.get(d.signing_key_id)
    if key is None:
        raise SignatureError(f"{label} is signed by key {d.signing_key_id[:16] or '(no id)'}..., which this "
                             "job does not trust (--trusted-keys)")
    if not d.sha256:
        raise SignatureError(f"{label} carries no sha256: nothing ties its signature to its bytes")
    try:
        key.verify(d.signature, statement(d))
    except InvalidSignature:
        raise SignatureError(f"{label}: the signature by key {d.signing_key_id[:16]}... is not for this "
                             "name, version, data type, model type and SHA-256 (altered, or replayed "
                             "from another model)") from None


# ---- keys on disk --------------------------------------------------------------------------------
def new_key_pair(directory: Path) -> str:
    """Writes private.pem (mode 600) and public.pem; returns the key id."""
    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    secret = directory / "private.pem"
    secret.touch(mode=0o600)
    secret.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
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
    """Public keys by id, from PEM files or directories of *.pem files."""
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
    if not keys and files:
        raise SignatureError(f"no public keys in {list(paths)}")
    return keys
