"""Authenticated, encrypted Kafka: the project's broker with a TLS + SASL/SCRAM listener and
KRaft's StandardAuthorizer (certificates and users made here), the job on a MiniCluster with
its own principal, and another client (librdkafka) checking what the broker refuses."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from contract import scoring_pb2 as pb
from contract.json_records import read_result
from contract.values import make_record
from infra import paths
from infra.job_harness import RunningJob, ScoringSetup
from infra.kafka_broker import KafkaBroker, free_ports
from infra.kafka_security import (
    BrokerSecurity,
    Principal,
    grant,
    job_acls,
    producer_acls,
    publisher_acls,
)
from model_store.kafka_config import KafkaClientConfig, KafkaConfigError, read_properties
from model_store.kafka_io import check_models_topic
from tests.conftest import load_samples

JOB, PUBLISHER, APP = Principal("scoring-job"), Principal("model-publisher"), Principal("billing-app")


def test_a_java_client_properties_file_becomes_kafka_python_settings(tmp_path):
    text = ("# comment\n! also a comment\nsecurity.protocol = SASL_SSL\nsasl.mechanism: SCRAM-SHA-256\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
            '    username="alice" password="p=w:d";\n'
            "ssl.truststore.type=PEM\nssl.truststore.location=/etc/ca.pem\nclient.id=mine\n")
    props = read_properties(text)
    assert props["security.protocol"] == "SASL_SSL" and props["sasl.mechanism"] == "SCRAM-SHA-256"
    assert props["client.id"] == "mine"
    kwargs = KafkaClientConfig("h:1", props).python_kwargs()
    assert kwargs == {"bootstrap_servers": "h:1", "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
                      "sasl_plain_username": "alice", "sasl_plain_password": "p=w:d",
                      "ssl_check_hostname": True, "ssl_cafile": "/etc/ca.pem"}
    assert KafkaClientConfig.load("h:1", None).python_kwargs() == {"bootstrap_servers": "h:1",
                                                                    "security_protocol": "PLAINTEXT"}


def test_secrets_from_kafkas_config_providers_are_resolved_as_the_java_client_would(tmp_path, monkeypatch):
    (tmp_path / "secrets.properties").write_text("password=from-a-file\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "user").write_text("from-a-directory")
    monkeypatch.setenv("KAFKA_TEST_TRUSTSTORE", "/etc/ca.pem")
    provider = "org.apache.kafka.common.config.provider."
    props = {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "ssl.truststore.type": "PEM",
             "config.providers": "file, dir,env", "config.providers.file.class": provider + "FileConfigProvider",
             "config.providers.dir.class": provider + "DirectoryConfigProvider",
             "config.providers.env.class": provider + "EnvVarConfigProvider",
             "ssl.truststore.location": "${env:KAFKA_TEST_TRUSTSTORE}",
             "sasl.jaas.config": f'x required username="${{dir:{tmp_path}/dir:user}}" '
                                 f'password="${{file:{tmp_path}/secrets.properties:password}}";'}
    kwargs = KafkaClientConfig("h:1", props).python_kwargs()
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"], kwargs["ssl_cafile"]) == (
        "from-a-directory", "from-a-file", "/etc/ca.pem")
    fenced = {**props, "config.providers.file.param.allowed.paths": str(tmp_path / "dir")}
    with pytest.raises(KafkaConfigError, match="secrets.properties is outside the provider's allowed.paths"):
        KafkaClientConfig("h:1", fenced).python_kwargs()
    with pytest.raises(KafkaConfigError, match="the CLI resolves only Kafka's built-in providers"):
        KafkaClientConfig("h:1", {**props, "config.providers.env.class": "com.example.Vault"}).python_kwargs()
    monkeypatch.delenv("KAFKA_TEST_TRUSTSTORE")
    with pytest.raises(KafkaConfigError, match="the environment has no KAFKA_TEST_TRUSTSTORE"):
        KafkaClientConfig("h:1", props).python_kwargs()


@pytest.mark.parametrize("props, says", [
    ({"security.protocol": "SSL", "ssl.truststore.location": "/ts.jks"},
     "ssl.truststore.type=JKS: the CLI reads PEM files only"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI"}, "sasl.mechanism=GSSAPI: the CLI supports"),
    ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
      "sasl.jaas.config": 'x required username="a";'}, 'must name username="..." and password="..."'),
    ({"security.protocol": "SSL", "ssl.truststore.certificates": "-----BEGIN"},
     "cannot honour ssl.truststore.certificates"),
    ({"security.protocol": "TLS"}, "security.protocol=TLS is not one of"),
])
def test_settings_the_cli_cannot_honour_are_refused_by_name(props, says):
    with pytest.raises(KafkaConfigError, match=says.replace("(", r"\(").replace(".", r"\.")):
        KafkaClientConfig("h:1", props).python_kwargs()


def test_the_jobs_start_up_check_says_why_it_cannot_read_the_models_topic():
    """The Java clients take a JKS trust store; the start-up check (kafka-python) cannot, and
    says so instead of stopping the job (it refuses only with --models-topic-check refuse)."""
    jks = KafkaClientConfig("127.0.0.1:1", {"security.protocol": "SSL", "ssl.truststore.location": "/ts.jks"})
    problem = check_models_topic(jks, "models")
    assert "cannot be read from 127.0.0.1:1" in problem and "reads PEM files only" in problem


def test_a_line_that_is_not_a_property_is_named(tmp_path):
    path = tmp_path / "client.properties"
    path.write_text("security.protocol=SSL\njust words\n")
    with pytest.raises(KafkaConfigError, match="client.properties, line 2: 'just words' is not key=value"):
        KafkaClientConfig.load("h:1", path)


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory) -> Iterator[KafkaBroker]:
    folder = tmp_path_factory.mktemp("secure-kafka")
    broker = KafkaBroker(folder, free_ports()[0], BrokerSecurity(folder / "tls", users=(JOB, PUBLISHER, APP)))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def rdkafka(broker: KafkaBroker, principal: Principal | None, password: str | None = None) -> dict[str, str]:
    """librdkafka's settings for `principal` (None: plaintext, no authentication)."""
    if principal is None:
        return {"bootstrap.servers": broker.bootstrap_servers}
    return {"bootstrap.servers": broker.bootstrap_servers, "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": principal.name,
            "sasl.password": password or principal.password, "ssl.ca.location": str(broker.security.ca_pem)}


def produce_errors(config: dict[str, str], topic: str, values: list[bytes]) -> list[str]:
    errors: list[str] = []
    producer = Producer({**config, "message.timeout.ms": 20000})
    for value in values:
        producer.produce(topic, value, on_delivery=lambda err, _msg: err and errors.append(err.name()))
    assert producer.flush(30) == 0
    return errors


def read_all(config: dict[str, str], topic: str, expected: int, timeout_s: float = 120) -> list[bytes]:
    """Committed values of `topic` from its start, without a consumer group."""
    consumer = Consumer({**config, "group.id": "unused", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
            elif message is not None and message.error().fatal():
                raise KafkaException(message.error())
    finally:
        consumer.close()
    return values


@pytest.mark.integration
def test_the_secure_listener_refuses_plaintext_and_wrong_passwords(secure_kafka):
    """librdkafka (its own TLS and SCRAM code) against the broker: only a right password over
    TLS gets an answer."""
    def answer(config: dict[str, str]) -> tuple[int, list[str]]:
        """How many brokers the metadata names (0: no answer), and the client's errors."""
        errors: list[str] = []
        admin = AdminClient({**config, "error_cb": lambda err: errors.append(str(err))})
        try:
            return len(admin.list_topics(timeout=6).brokers), errors
        except KafkaException:
            admin.poll(1)  # serves the error callbacks
            return 0, errors

    assert answer(rdkafka(secure_kafka, APP)) == (1, [])
    brokers, errors = answer(rdkafka(secure_kafka, None))
    assert brokers == 0 and any("_TRANSPORT" in e or "_ALL_BROKERS_DOWN" in e for e in errors), errors
    brokers, errors = answer(rdkafka(secure_kafka, APP, password="not-the-password"))
    assert brokers == 0 and any("Authentication failed" in e and "invalid credentials" in e for e in errors), errors
    brokers, errors = answer({**rdkafka(secure_kafka, APP), "ssl.ca.location": "probe"})  # the system's CAs
    assert brokers == 0 and any("certificate verify failed" in e for e in errors), errors


def model_store(setup: ScoringSetup, properties: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_store.cli", "--store-root", str(setup.repo.root),
                           "--bootstrap-servers", setup.bootstrap, "--kafka-config", str(properties), *args],
                          cwd=paths.ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_the_job_runs_with_its_own_principal_and_an_app_cannot_publish_a_model(secure_kafka, store, samples, tmp_path):
    """Every principal has only its ACLs: the job reads data and models and writes its three
    topics (exactly-once, so in transactions); the publisher publishes; the app sends records
    and reads their results, and the broker refuses its model publish while v1 serves on."""
    repo, server = store
    security, bootstrap = secure_kafka.security, secure_kafka.bootstrap_servers
    admin_file = security.write_client_properties(bootstrap, security.admin)
    setup = ScoringSetup(bootstrap, repo, server.base_url, tmp_path / "job", kafka_config=admin_file)
    grant(secure_kafka.admin, job_acls(JOB, setup.topics, setup.group_id) + publisher_acls(PUBLISHER, setup.topics)
          + producer_acls(APP, setup.topics))
    # The job's password is not in its properties (nor so in its graph): Kafka's FileConfigProvider
    # reads it where each client starts, the CLI's start-up check the same way.
    job_file = security.write_client_properties(bootstrap, JOB, password_file=True)
    publisher_file, app_file = (security.write_client_properties(bootstrap, p) for p in (PUBLISHER, APP))
    assert JOB.password not in job_file.read_text()
    wine = samples["wine-pmml"]
    doc = load_samples(wine)
    app = rdkafka(secure_kafka, APP)

    with RunningJob(setup.job_args(kafka_config=job_file, models_topic_check="refuse"), tmp_path / "job.log") as job:
        published = model_store(setup, publisher_file, "publish", "--name", "secure-wine", "--data-type", "wine",
                                "--type", "pmml", "--path", str(wine / "model.pmml"), "--topic", setup.topics["models"],
                                "--base-url", server.base_url)
        assert published.returncode == 0, published.stderr
        sent = model_store(setup, app_file, "send", "--data-type", "wine", "--samples", str(wine / "samples.json"),
                           "--count", str(len(doc["inputs"])), "--id-prefix", "app", "--data-topic", setup.topics["data"])
        assert sent.returncode == 0, sent.stderr
        assert produce_errors(app, setup.topics["data"], [b"\x00 not a record"]) == []

        refused = model_store(setup, app_file, "publish", "--name", "secure-wine", "--data-type", "wine",
                              "--type", "pmml", "--path", str(wine / "model.pmml"), "--topic", setup.topics["models"],
                              "--base-url", server.base_url)
        assert refused.returncode == 2
        assert "the broker refused this principal" in refused.stderr and "TopicAuthorizationFailed" in refused.stderr
        assert produce_errors(app, setup.topics["models"], [b"anything"]) == ["TOPIC_AUTHORIZATION_FAILED"]

        after = make_record("after-refusal", "wine", doc["inputs"][0], int(time.time() * 1000))
        assert produce_errors(app, setup.topics["data"], [after.SerializeToString()]) == []
        results = [read_result(v) for v in read_all(app, setup.topics["scores"], len(doc["inputs"]) + 1)]
        dead = [pb.DeadLetter.FromString(v) for v in read_all(app, setup.topics["dead-letters"], 1)]
        job.assert_running()
    assert JOB.password not in (tmp_path / "job.log").read_text()
    assert sorted(r.record_id for r in results) == sorted([f"app-{i}" for i in range(len(doc["inputs"]))] + ["after-refusal"])
    assert {(r.model_name, r.model_version) for r in results} == {("secure-wine", 1)}
    assert [d.original for d in dead] == [b"\x00 not a record"] and dead[0].reason
    events = [pb.ModelEvent.FromString(v) for v in read_all(rdkafka(secure_kafka, PUBLISHER),
                                                             setup.topics["model-events"], 10**6, timeout_s=5)]
    assert (pb.ModelEvent.AVAILABLE, "secure-wine", 1) in {(e.state, e.model_name, e.model_version) for e in events}
