"""The JVM-only baseline: the scoring job's Kafka source, keying on the JVM, key-by exchange,
delivery, checkpoints and scores sink, with a Java identity operator (RecordBytes) and no Python
at all. What it reaches is the framework's ceiling for the job's data path.

    python -m bench.jvm_only_job [the scoring job's flags]
"""

from __future__ import annotations

import sys

from pyflink.common import WatermarkStrategy
from pyflink.datastream import DataStream
from pyflink.java_gateway import get_gateway

from jobs.flink_env import BYTES, bytes_sink, bytes_source, keyed_by_data_type
from jobs.scoring_job import environment, kafka_config, parse_args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env, kafka = environment(args), kafka_config(args)
    data = env.from_source(bytes_source(kafka, args.data_topic, args.group_id, args.starting_offsets),
                           WatermarkStrategy.no_watermarks(), f"kafka: {args.data_topic}").uid("data-source")
    keyed = keyed_by_data_type(data, args.record_format, args.max_record_bytes)
    identity = get_gateway().jvm.io.github.flinkscoring.RecordBytes()
    passed = DataStream(keyed._j_data_stream.map(identity, BYTES.get_java_type_info()).name("identity (Java)"))
    passed.sink_to(bytes_sink(kafka, args.scores_topic, args.delivery,
                              transactional_id_prefix=f"{args.group_id}-scores")).name(f"kafka: {args.scores_topic}")
    env.execute(args.job_name + " (JVM only)")


if __name__ == "__main__":
    main()
