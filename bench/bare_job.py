"""The bare-PyFlink baseline: the scoring job's topology, flags and settings (Kafka source and
sinks, delivery, checkpoints, bundles, the connected broadcast stream) with identity functions
and no state. What it reaches is the framework's ceiling for the job's shape.

    python -m bench.bare_job [the scoring job's flags]
"""

from __future__ import annotations

import sys

from pyflink.datastream import KeyedBroadcastProcessFunction, ProcessFunction

from contract import scoring_pb2 as pb
from jobs.scoring_job import build, environment, kafka_config, parse_args


class KeyByDataType(ProcessFunction):
    """Parses the DataRecord, as the job must to key it."""

    def process_element(self, value: bytes, ctx):
        yield pb.DataRecord.FromString(value).data_type, value


class PassOn(KeyedBroadcastProcessFunction):
    """Yields each record's bytes; ignores model updates."""

    def process_element(self, value, ctx):
        yield value[1]

    def process_broadcast_element(self, value, ctx):
        yield from ()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = environment(args)
    build(env, args, kafka_config(args), parse_records=KeyByDataType(), score=PassOn())
    env.execute(args.job_name + " (bare PyFlink)")


if __name__ == "__main__":
    main()
