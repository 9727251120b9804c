"""Where things live in a checkout. Everything generated goes under git-ignored folders."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
LIB = ROOT / "lib"
KAFKA_LIB = LIB / "kafka"
RUN = ROOT / ".run"  # runtime data: broker logs, cluster logs, checkpoints, model store
FLINK_CONF = ROOT / "flink-conf"

