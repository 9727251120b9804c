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

Secrets need not be in it: Kafka's configuration providers fill `${provider:path:key}` in
when a client starts, so the job's graph (and Flink's HA storage) carries the reference, and
the TaskManagers read the secret from their own files or environment:

    config.providers=file
    config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider
    sasl.jaas.config=... username="scoring-job" password="${file:/etc/kafka/secrets.properties:password}";

The CLI resolves the three built-in providers (file, directory, environment) the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
PROPERTY = re.compile(r"([^=:\s]+)\s*[=:]\s*(.*)")
# Kafka's ConfigTransformer pattern: ${provider:[path:]key}
VARIABLE = re.compile(r"\$\{([^}]*?):(?:([^}]*?):)?([^}]*?)\}")
BUILT_IN_PROVIDERS = {f"org.apache.kafka.common.config.provider.{name}ConfigProvider": name.lower()
                      for name in ("File", "Directory", "EnvVar")}
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
        if "config.providers" in self.properties:
            return KafkaClientConfig(self.bootstrap, resolved(self.properties)).python_kwargs()
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


def resolved(props: Mapping[str, str]) -> dict[str, str]:
    """`props` with every `${provider:path:key}` of a built-in provider filled in, as the Java
    client would (its `allowed.paths` parameter honoured), and the provider settings dropped."""
    providers = {}
    for alias in filter(None, (a.strip() for a in props["config.providers"].split(","))):
        kind = BUILT_IN_PROVIDERS.get(props.get(f"config.providers.{alias}.class", ""))
        if kind is None:
            raise KafkaConfigError(
                f"config.providers.{alias}.class={props.get(f'config.providers.{alias}.class', '')!r}: the CLI "
                f"resolves only Kafka's built-in providers ({', '.join(BUILT_IN_PROVIDERS)})")
        allowed = props.get(f"config.providers.{alias}.param.allowed.paths", "")
        providers[alias] = (kind, [Path(a.strip()).resolve() for a in allowed.split(",") if a.strip()])

    def value_of(match: re.Match) -> str:
        alias, path, key = match[1], match[2], match[3]
        if alias not in providers:
            return match[0]  # not a variable of a declared provider: the Java client leaves it too
        kind, allowed = providers[alias]
        return _provided(kind, allowed, path, key, match[0])

    return {k: VARIABLE.sub(value_of, v) for k, v in props.items() if not k.startswith("config.providers")}


def _provided(kind: str, allowed: list[Path], path: str | None, key: str, variable: str) -> str:
    if kind == "envvar":
        if key not in os.environ:
            raise KafkaConfigError(f"{variable}: the environment has no {key}")
        return os.environ[key]
    if not path:
        raise KafkaConfigError(f"{variable}: the {kind} provider takes ${{alias:path:key}}")
    file = Path(path).resolve() / key if kind == "directory" else Path(path).resolve()
    if allowed and not any(file.is_relative_to(a) for a in allowed):
        raise KafkaConfigError(f"{variable}: {file} is outside the provider's allowed.paths")
    try:
        text = file.read_text()
    except OSError as err:
        raise KafkaConfigError(f"{variable} cannot be read: {err}") from err
    if kind == "directory":
        return text
    values = read_properties(text, str(file))
    if key not in values:
        raise KafkaConfigError(f"{variable}: {file} has no key {key}")
    return values[key]


def client_config(kafka: str | KafkaClientConfig) -> KafkaClientConfig:
    """A bare bootstrap string means plaintext without authentication."""
    return kafka if isinstance(kafka, KafkaClientConfig) else KafkaClientConfig(kafka)
