"""Copies every record of one Kafka topic to another through a PyFlink Python operator.

The smallest Kafka -> PyFlink -> Kafka path: it proves the connector, the broker and the
Python workers fit together, locally (`python -m jobs.copy_topic ...`, a MiniCluster) and
on the cluster (`flink run -py jobs/copy_topic.py -j lib/flink/<connector>.jar ...`).
"""

from __future__ import annotations

import argparse
import sys

from pyflink.common import Types, WatermarkStrategy

from jobs.flink_env import (
    DELIVERY,
    STARTING_OFFSETS,
    bytes_sink,
    bytes_source,
    execution_environment,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    p.add_argument("--source-topic", required=True)
    p.add_argument("--sink-topic", required=True)
    p.add_argument("--group-id", default="copy-topic")
    p.add_argument("--starting-offsets", choices=sorted(STARTING_OFFSETS), default="earliest")
    p.add_argument("--bounded", action="store_true",
                   help="stop at the offsets that are latest when the job starts")
    p.add_argument("--delivery", choices=sorted(DELIVERY), default="at-least-once")
    p.add_argument("--parallelism", type=int, default=1)
    p.add_argument("--checkpoint-interval-ms", type=int, default=5000)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = execution_environment(args.parallelism, args.checkpoint_interval_ms)
    source = bytes_source(args.bootstrap_servers, args.source_topic, args.group_id,
                          args.starting_offsets, args.bounded)
    records = env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka: " + args.source_topic)
    copied = records.map(bytes, output_type=Types.PRIMITIVE_ARRAY(Types.BYTE())).name("copy")
    copied.sink_to(bytes_sink(args.bootstrap_servers, args.sink_topic, args.delivery,
                              transactional_id_prefix=f"copy-{args.sink_topic}"))
    env.execute(f"copy {args.source_topic} -> {args.sink_topic}")


if __name__ == "__main__":
    main()
