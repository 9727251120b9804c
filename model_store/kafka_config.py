"""How a client connects to Kafka: the bootstrap servers and the Java client's properties.

Users arrive with a Java client properties file (Kafka's tools take one with
`--command-config`); the job hands its properties to Flink's Kafka sources and sinks as they
are, and the CLI translates the security ones for kafka-python. One file serves both when
its certificates and keys are PEM files:

    security.protocol=SASL_SSL
    sasl.mechanism=SCRAM-SHA-512
    sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\
        username="scoring-job" password="...";
    ssl.truststore.type=PEM
    ssl.truststore.location=/etc/kafka/ca.pem
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
PROPERTY = re.compile(r"([^=:\s]+)\s*[=:]\s*(.*)")
JAAS_FIELD = re.compile(r'(username|password)\s*=\s*"((?:[^"\\]|\\.)*)"')
# Security settings the CLI honours; any other ssl.*, sasl.* or security.* key is refused
# there rather than silently dropped (the job passes every key to the Java client).
PYTHON_SECURITY_KEYS = {
    "security.protocol", "sasl.mechanism", "sasl.jaas.config", "ssl.truststore.type",
    "ssl.truststore.location", "ssl.keystore.type", "ssl.keystore.location", "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
}


class KafkaConfigError(ValueError):
    """A client properties file that cannot be used; the message says which key and why."""


def read_properties(text: str, source: str = "properties") -> dict[str, str]:
    """Java `.properties` text: `key=value` or `key: value` lines, `#`/`!` comments, and
    lines continued by a trailing backslash."""
    props: dict[str, str] = {}
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = pending + raw.strip() if pending else raw.strip()
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending = line[:-1]
            continue
        pending = ""
        if not line or line[0] in "#!":
            continue
        entry = PROPERTY.fullmatch(line)
        if not entry:
            raise KafkaConfigError(f"{source}, line {number}: {raw.strip()!r} is not key=value")
        props[entry[1]] = entry[2]
    return props


@dataclass(frozen=True)
class KafkaClientConfig:
    """A Kafka cluster's bootstrap servers and the client properties to reach it with."""

    bootstrap: str
    properties: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, bootstrap: str, path: str | Path | None) -> KafkaClientConfig:
        """The properties file at `path`; no file: plaintext, no authentication."""
        if not path:
            return cls(bootstrap)
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise KafkaConfigError(f"the Kafka client properties file {path} cannot be read: {err}") from err
        return cls(bootstrap, read_properties(text, str(path)))

    @property
    def protocol(self) -> str:
        return self.properties.get("security.protocol", "PLAINTEXT").upper()

    def python_kwargs(self) -> dict[str, Any]:
        """kafka-python's keyword arguments for these settings, `bootstrap_servers` included."""
        p = self.properties
        unsupported = sorted(k for k in p if k.startswith(("ssl.", "sasl.", "security."))
                             and k not in PYTHON_SECURITY_KEYS)
        if unsupported:
            raise KafkaConfigError(
                f"the CLI's Kafka client (kafka-python) cannot honour {', '.join(unsupported)}: "
                f"it takes {', '.join(sorted(PYTHON_SECURITY_KEYS))}")
        if self.protocol not in PROTOCOLS:
            raise KafkaConfigError(f"security.protocol={p['security.protocol']} is not one of {', '.join(PROTOCOLS)}")
        kwargs: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.protocol}
        if self.protocol.startswith("SASL_"):
            kwargs.update(self._sasl())
        if self.protocol.endswith("SSL"):
            kwargs.update(self._ssl())
        return kwargs

    def _sasl(self) -> dict[str, Any]:
        mechanism = self.properties.get("sasl.mechanism", "GSSAPI").upper()
        if mechanism not in SASL_MECHANISMS:
            raise KafkaConfigError(f"sasl.mechanism={mechanism}: the CLI supports {', '.join(SASL_MECHANISMS)}")
        found = dict(JAAS_FIELD.findall(self.properties.get("sasl.jaas.config", "")))
        if set(found) != {"username", "password"}:
            raise KafkaConfigError(
                f'sasl.jaas.config must name username="..." and password="..." for {mechanism}')
        return {"sasl_mechanism": mechanism, "sasl_plain_username": found["username"],
                "sasl_plain_password": found["password"]}

    def _ssl(self) -> dict[str, Any]:
        p = self.properties
        kwargs: dict[str, Any] = {
            "ssl_check_hostname": p.get("ssl.endpoint.identification.algorithm", "https") != ""}
        if "ssl.truststore.location" in p:
            kwargs["ssl_cafile"] = self._pem_file("truststore")
        if "ssl.keystore.location" in p:
            # One PEM file holding the private key and its certificate chain (mTLS).
            kwargs["ssl_certfile"] = self._pem_file("keystore")
            kwargs["ssl_password"] = p.get("ssl.key.password")
        return kwargs

    def _pem_file(self, store: str) -> str:
        kind = self.properties.get(f"ssl.{store}.type", "JKS").upper()
        if kind != "PEM":
            raise KafkaConfigError(
                f"ssl.{store}.type={kind}: the CLI reads PEM files only; convert the {store} to PEM "
                f"(the Java client reads PEM too) and set ssl.{store}.type=PEM")
        return self.properties[f"ssl.{store}.location"]


def client_config(kafka: str | KafkaClientConfig) -> KafkaClientConfig:
    """A bare bootstrap string means plaintext without authentication."""
    return kafka if isinstance(kafka, KafkaClientConfig) else KafkaClientConfig(kafka)
