"""The bare-PyFlink baseline: the scoring job's topology, flags and settings (Kafka source and
sinks, delivery, checkpoints, bundles, the keying on the JVM, the connected broadcast stream)
with an identity function and no state, one element per record (the record path's keying).
What it reaches is the framework's ceiling for the job's shape.

    python -m bench.bare_job [the scoring job's flags]
"""

from __future__ import annotations

import sys

from pyflink.datastream import KeyedBroadcastProcessFunction

from jobs.operators import MAIN
from jobs.scoring_job import build, environment, kafka_config, parse_args


class PassOn(KeyedBroadcastProcessFunction):
    """Yields each record's bytes to the main output; ignores model updates."""

    def process_element(self, value, ctx):
        yield MAIN + value

    def process_broadcast_element(self, value, ctx):
        yield from ()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.columnar = False  # one element per record: PyFlink's own per-record ceiling
    env = environment(args)
    build(env, args, kafka_config(args), score=PassOn())
    env.execute(args.job_name + " (bare PyFlink)")


if __name__ == "__main__":
    main()
