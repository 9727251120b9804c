"""The JVM jars a job ships with (fetched into lib/flink by `make jars`). No PyFlink here:
the tools that submit jobs with `flink run -j` import it too."""

import re
from pathlib import Path

FLINK_LIB = Path(__file__).resolve().parents[1] / "lib" / "flink"


def kafka_connector_jar() -> Path:
    return _newest("flink-sql-connector-kafka-*.jar", "The Flink Kafka connector jar")


def operators_jar() -> Path:
    """The job's own Java operators, built from jvm/operators/ (DataTypeKey, RouteByTag)."""
    return _newest("flink-scoring-operators.jar", "The job's operators jar")


def job_jars() -> list[Path]:
    """What every job ships with."""
    return [kafka_connector_jar(), operators_jar()]


def _newest(pattern: str, what: str) -> Path:
    jars = sorted(FLINK_LIB.glob(pattern))
    if not jars:
        raise FileNotFoundError(f"{what} is missing from {FLINK_LIB}: run `make jars`.")
    return jars[-1]


# The SQL connector jar relocates the Kafka client: class names inside client properties
# (a JAAS login module, a callback handler) must carry this prefix to be found.
SHADED_KAFKA_PREFIX = "org.apache.flink.kafka.shaded."


def shaded_class_names(value: str) -> str:
    """`value` with the Kafka client's class names as the connector jar has them."""
    return re.sub(r"(?<![\w.])org\.apache\.kafka\.", SHADED_KAFKA_PREFIX + "org.apache.kafka.", value)
