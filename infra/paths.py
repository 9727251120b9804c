"""Where things live in a checkout. Everything generated goes under git-ignored folders."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
LIB = ROOT / "lib"
KAFKA_LIB = LIB / "kafka"
FLINK_LIB = LIB / "flink"
RUN = ROOT / ".run"  # runtime data: broker logs, cluster logs, checkpoints, model store
FLINK_CONF = ROOT / "flink-conf"


def kafka_connector_jar() -> Path:
    jars = sorted(FLINK_LIB.glob("flink-sql-connector-kafka-*.jar"))
    if not jars:
        raise FileNotFoundError(
            f"The Flink Kafka connector jar is missing from {FLINK_LIB}: run `make jars`."
        )
    return jars[-1]
