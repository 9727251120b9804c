"""The pass-through baseline: the scoring job itself (its graph, state, model loads, swaps,
batches, results written as usual), but no model is called; every record's result carries
no outputs. What it reaches is the job's own cost without a model.

    python -m bench.passthrough_job [the scoring job's flags]
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import pyarrow as pa

from contract.values import PyValue
from jobs.score_batches import ScoreBatches
from jobs.score_records import ScoreRecords
from jobs.scoring_job import build, environment, kafka_config, options_from, parse_args
from scoring.backends.base import LoadedModel
from scoring.batch import Outcome
from scoring.columns import Scored


def no_column_call(model: LoadedModel, batch: pa.RecordBatch) -> Scored:
    n = batch.num_rows
    return Scored([None] * n, [""] * n, {})


def no_record_call(model: LoadedModel, batch: Sequence[Mapping[str, PyValue]]) -> list[Outcome]:
    return [Outcome(outputs={}) for _ in batch]


class PassBatches(ScoreBatches):
    model_call = staticmethod(no_column_call)


class PassRecords(ScoreRecords):
    model_call = staticmethod(no_record_call)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = environment(args)
    score = (PassBatches if args.columnar else PassRecords)(options_from(args), args.execution_mode)
    build(env, args, kafka_config(args), score=score)
    env.execute(args.job_name + " (pass-through)")


if __name__ == "__main__":
    main()
