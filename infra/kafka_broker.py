"""A real single-node Apache Kafka broker (KRaft, broker + controller) run from Maven jars.

Used by `make kafka-up` / `make kafka-down` and by the test fixtures, so both run the
same broker the same way:

    python -m infra.kafka_broker start [--port 9092] [--data-dir .run/kafka]
    python -m infra.kafka_broker status|stop
    python -m infra.kafka_broker topics      # create the job's topics, idempotently
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from infra import paths
from infra.kafka_security import BrokerSecurity, Principal, grant, job_acls
from infra.procs import ensure_port_free, free_port, port_is_open, stop_pid, wait_until
from infra.topics import create_job_topics
from model_store.kafka_config import KafkaClientConfig

DEFAULT_PORT = 9092
START_TIMEOUT_S = 90


class BrokerError(RuntimeError):
    """The broker cannot be started or reached; the message says what to do."""


def kafka_classpath() -> str:
    jars = sorted(paths.KAFKA_LIB.glob("*.jar"))
    if not jars:
        raise BrokerError(
            f"No Kafka jars in {paths.KAFKA_LIB}. Run `make jars` (Maven fetches them "
            "from Maven Central into lib/)."
        )
    return os.pathsep.join(str(j) for j in jars)


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    if candidate and candidate.exists():
        return str(candidate)
    found = shutil.which("java")
    if not found:
        raise BrokerError("Java is not installed or not on PATH: install JDK 17 and retry.")
    return found


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class KafkaBroker:
    """Plaintext without authentication, or with `security` a SASL_SSL listener that
    enforces ACLs (infra/kafka_security.py), and with `internal_port` also a PLAINTEXT one
    for trusted tools on this host (its principal, ANONYMOUS, is a super user)."""

    data_dir: Path
    port: int = DEFAULT_PORT
    security: BrokerSecurity | None = None
    internal_port: int | None = None

    def client_listeners(self) -> dict[str, int]:
        """Port by protocol (the listener names are the protocols)."""
        if not self.security:
            return {"PLAINTEXT": self.port}
        return {"SASL_SSL": self.port, **({"PLAINTEXT": self.internal_port} if self.internal_port else {})}

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def admin(self) -> KafkaClientConfig:
        """How to reach the broker as its super user."""
        if self.security:
            return self.security.client(self.bootstrap_servers, self.security.admin)
        return KafkaClientConfig(self.bootstrap_servers)

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def _java(self, main_class: str, *args: str, **popen_kwargs):
        cmd = [
            java_executable(),
            "-Xms256m",
            "-Xmx1g",
            f"-Dlog4j2.configurationFile={paths.INFRA / 'kafka' / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            kafka_classpath(),
            main_class,
            *args,
        ]
        return cmd, popen_kwargs

    def _write_config(self) -> None:
        template = Template((paths.INFRA / "kafka" / "server.properties").read_text())
        self.config_file.write_text(
            template.substitute(
                listeners=",".join(f"{name}://127.0.0.1:{port}" for name, port in self.client_listeners().items()),
                protocol_map=",".join(f"{name}:{name}" for name in self.client_listeners()),
                protocol="SASL_SSL" if self.security else "PLAINTEXT",
                controller_port=self.controller_port,
                data_dir=self.data_dir,
                security=self.security.server_properties() if self.security else "",
            )
        )

    def _format_storage(self) -> None:
        if (self.data_dir / "log" / "meta.properties").exists():
            return
        cmd, _ = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--ignore-formatted",
            f"--cluster-id={new_cluster_id()}",
            f"--config={self.config_file}",
            *(f"--add-scram={c}" for c in (self.security.scram_credentials() if self.security else [])),
        )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise BrokerError(f"Formatting Kafka storage in {self.data_dir} failed:\n{done.stderr}")

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        if self.running_pid():
            if port_is_open(self.port):
                return
            raise BrokerError(f"A broker process is recorded in {self.pid_file} but port {self.port} is closed.")
        for name, port in self.client_listeners().items():
            ensure_port_free(port, f"Kafka broker ({name})")
        ensure_port_free(self.controller_port, "Kafka controller")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._format_storage()
        cmd, _ = self._java("kafka.Kafka", str(self.config_file))
        with open(self.data_dir / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid_file.write_text(str(proc.pid))
        try:
            wait_until(
                lambda: self._answers(),
                timeout_s,
                f"Kafka broker on port {self.port}",
                alive=lambda: proc.poll() is None,
                logs=[self.log_file, self.data_dir / "stdout.log"],
            )
        except Exception:
            self.stop()
            raise

    def _answers(self) -> bool:
        if not port_is_open(self.port):
            return False
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(**self.admin.python_kwargs(), request_timeout_ms=5000)
        except KafkaError:
            return False
        try:
            admin.list_topics()
            return True
        except KafkaError:
            return False
        finally:
            admin.close()

    def stop(self) -> None:
        pid = self.running_pid()
        if pid:
            stop_pid(pid, signal.SIGTERM, grace_s=30)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """`kill -9`: no clean shutdown, the logs recovered at the next start."""
        pid = self.running_pid()
        if pid:
            stop_pid(pid, signal.SIGKILL, grace_s=30)
        self.pid_file.unlink(missing_ok=True)

    def admit_job(self, principal: Principal, topics: Mapping[str, str], group_id: str) -> Path:
        """Grant `principal` the scoring job's ACLs on `topics`; its client properties file
        for the SASL_SSL listener (the job's --kafka-config)."""
        grant(self.admin, job_acls(principal, topics, group_id))
        return self.security.write_client_properties(self.bootstrap_servers, principal)

    def create_job_topics(self, names: dict[str, str], partitions: int = 1) -> None:
        """Create the job's topics (by role) that do not exist yet, the models topic compacted."""
        create_job_topics(self.admin, names, partitions)


def free_ports() -> tuple[int, int]:
    """A free port for a broker (its controller takes the next one) and another free one for
    an extra listener (`internal_port`)."""
    port, other = free_port(), free_port()
    while port + 1 >= 65535 or other in (port, port + 1):
        port, other = free_port(), free_port()
    return port, other


def default_broker(port: int | None = None, data_dir: Path | None = None) -> KafkaBroker:
    return KafkaBroker(
        data_dir=data_dir or paths.RUN / "kafka",
        port=port or int(os.environ.get("KAFKA_PORT", DEFAULT_PORT)),
    )


def main(argv: list[str] | None = None) -> int:
    from contract.topics import TopicNames

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status", "topics"])
    parser.add_argument("--port", type=int, help=f"broker port (default $KAFKA_PORT or {DEFAULT_PORT})")
    parser.add_argument("--data-dir", type=Path, help="data folder (default .run/kafka)")
    parser.add_argument("--partitions", type=int, default=2, help="partitions per job topic")
    args = parser.parse_args(argv)
    broker = default_broker(args.port, args.data_dir)
    try:
        if args.command == "start":
            broker.start()
            broker.create_job_topics(TopicNames.from_env().by_role(), args.partitions)
            print(f"Kafka broker up at {broker.bootstrap_servers} (data in {broker.data_dir})")
        elif args.command == "stop":
            broker.stop()
            print("Kafka broker stopped")
        elif args.command == "status":
            pid = broker.running_pid()
            print(f"Kafka broker: {'running, pid ' + str(pid) if pid else 'not running'}")
            return 0 if pid else 1
        elif args.command == "topics":
            broker.create_job_topics(TopicNames.from_env().by_role(), args.partitions)
            print("topics ready")
    except BrokerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
