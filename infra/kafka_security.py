"""A secured listener for the project's broker: TLS, SASL/SCRAM-SHA-512 and ACLs enforced
by KRaft's StandardAuthorizer; certificates and users made at run time.

Who may do what is granted per role (`job_acls`, `publisher_acls`, `producer_acls`); the
README's "Authenticated, encrypted Kafka" shows the same grants as `kafka-acls.sh` commands.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kafka import KafkaAdminClient
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourceType,
)

from model_store.kafka_config import KafkaClientConfig

MECHANISM = "SCRAM-SHA-512"
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"


@dataclass(frozen=True)
class Principal:
    """A SCRAM user; Kafka's ACLs name it `User:<name>`."""

    name: str
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)

    @property
    def jaas(self) -> str:
        return f'{SCRAM_LOGIN} required username="{self.name}" password="{self.password}";'


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8: the form the Java client's PEM keystore reads.
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_certificates(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A CA (ca.pem) and a broker key + certificate signed by it for `host` (broker.pem)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("scoring test CA")).issuer_name(_name("scoring test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem, broker_pem = folder / "ca.pem", folder / "broker.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    broker_pem.write_bytes(_pem_key(key) + cert.public_bytes(serialization.Encoding.PEM)
                           + ca.public_bytes(serialization.Encoding.PEM))
    broker_pem.chmod(0o600)
    return ca_pem, broker_pem


@dataclass
class BrokerSecurity:
    """The broker's client listener speaks SASL_SSL; `admin` is its super user (and the
    inter-broker principal); `users` are created with it when its storage is formatted."""

    folder: Path
    users: tuple[Principal, ...] = ()
    admin: Principal = field(default_factory=lambda: Principal("admin"))

    def __post_init__(self) -> None:
        self.ca_pem, self.broker_pem = make_certificates(self.folder)

    def scram_credentials(self) -> list[str]:
        """StorageTool's --add-scram values: the users exist before the broker starts."""
        return [f"{MECHANISM}=[name={u.name},password={u.password}]" for u in (self.admin, *self.users)]

    def server_properties(self) -> str:
        # The controller listener stays PLAINTEXT on loopback: KRaft cannot authenticate it
        # with SCRAM, and its principal (ANONYMOUS) must be a super user to register the broker.
        return "\n".join([
            f"sasl.enabled.mechanisms={MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config={self.admin.jaas}",
            "ssl.keystore.type=PEM", f"ssl.keystore.location={self.broker_pem}",
            "ssl.truststore.type=PEM", f"ssl.truststore.location={self.ca_pem}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{self.admin.name};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found=false",
        ]) + "\n"

    def client(self, bootstrap: str, principal: Principal) -> KafkaClientConfig:
        return KafkaClientConfig(bootstrap, {
            "security.protocol": "SASL_SSL", "sasl.mechanism": MECHANISM, "sasl.jaas.config": principal.jaas,
            "ssl.truststore.type": "PEM", "ssl.truststore.location": str(self.ca_pem)})

    def write_client_properties(self, bootstrap: str, principal: Principal, password_file: bool = False) -> Path:
        """The principal's client properties file, as the job's --kafka-config and the CLI take it;
        with `password_file`, its password is in a file of its own that Kafka's FileConfigProvider
        reads where the client runs, and the properties name only the file."""
        properties = dict(self.client(bootstrap, principal).properties)
        if password_file:
            secrets_path = self.folder / f"{principal.name}.secrets.properties"
            _write_private(secrets_path, f"password={principal.password}\n")
            properties.update({
                "config.providers": "file",
                "config.providers.file.class": "org.apache.kafka.common.config.provider.FileConfigProvider",
                "sasl.jaas.config": principal.jaas.replace(principal.password, f"${{file:{secrets_path}:password}}"),
            })
        path = self.folder / f"{principal.name}.properties"
        _write_private(path, "".join(f"{k}={v}\n" for k, v in properties.items()))
        return path


def _write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def _allow(principal: Principal, kind: ResourceType, name: str, operations: Iterable[ACLOperation],
           prefixed: bool = False) -> list[ACL]:
    pattern = ResourcePattern(kind, name, ACLResourcePatternType.PREFIXED if prefixed else ACLResourcePatternType.LITERAL)
    return [ACL(f"User:{principal.name}", "*", op, ACLPermissionType.ALLOW, pattern) for op in operations]


def job_acls(principal: Principal, topics: Mapping[str, str], group_id: str) -> list[ACL]:
    """The scoring job: reads data and models (and the models topic's config, checked at start),
    writes its output topics in transactions named after its group id."""
    read, write = (ACLOperation.READ, ACLOperation.DESCRIBE), (ACLOperation.WRITE, ACLOperation.DESCRIBE)
    acls = _allow(principal, ResourceType.TOPIC, topics["data"], read)
    acls += _allow(principal, ResourceType.TOPIC, topics["models"], (*read, ACLOperation.DESCRIBE_CONFIGS))
    for role in ("scores", "dead-letters", "model-events", "pairs"):
        if role in topics:
            acls += _allow(principal, ResourceType.TOPIC, topics[role], write)
    acls += _allow(principal, ResourceType.GROUP, group_id, (ACLOperation.READ,), prefixed=True)
    acls += _allow(principal, ResourceType.TRANSACTIONAL_ID, group_id, write, prefixed=True)
    return acls


def publisher_acls(principal: Principal, topics: Mapping[str, str]) -> list[ACL]:
    """Whoever releases models: writes the models topic, reads the job's model events."""
    acls = _allow(principal, ResourceType.TOPIC, topics["models"],
                  (ACLOperation.WRITE, ACLOperation.DESCRIBE, ACLOperation.DESCRIBE_CONFIGS))
    return acls + _allow(principal, ResourceType.TOPIC, topics["model-events"], (ACLOperation.READ, ACLOperation.DESCRIBE))


def producer_acls(principal: Principal, topics: Mapping[str, str]) -> list[ACL]:
    """An application: writes records, reads their results and dead letters; no models."""
    acls = _allow(principal, ResourceType.TOPIC, topics["data"], (ACLOperation.WRITE, ACLOperation.DESCRIBE))
    for role in ("scores", "dead-letters"):
        acls += _allow(principal, ResourceType.TOPIC, topics[role], (ACLOperation.READ, ACLOperation.DESCRIBE))
    return acls


def grant(admin: KafkaClientConfig, acls: list[ACL]) -> None:
    client = KafkaAdminClient(**admin.python_kwargs())
    try:
        result = client.create_acls(acls)
    finally:
        client.close()
    if result.get("failed"):
        raise RuntimeError(f"the broker refused ACLs: {result['failed']}")
