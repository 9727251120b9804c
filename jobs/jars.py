"""The JVM jars a job ships with (fetched into lib/flink by `make jars`). No PyFlink here:
the tools that submit jobs with `flink run -j` import it too."""

from pathlib import Path

FLINK_LIB = Path(__file__).resolve().parents[1] / "lib" / "flink"


def kafka_connector_jar() -> Path:
    jars = sorted(FLINK_LIB.glob("flink-sql-connector-kafka-*.jar"))
    if not jars:
        raise FileNotFoundError(
            f"The Flink Kafka connector jar is missing from {FLINK_LIB}: run `make jars`."
        )
    return jars[-1]
