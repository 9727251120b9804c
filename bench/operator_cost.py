"""The scoring operator's own Python work per record, without Flink: `ScoreRecords` driven
directly with in-memory stand-ins for its keyed state, broadcast state, timers and metrics,
pass-through (no model call), 8 data types, the bench's wine records (13 inputs).

What it measures is a floor under the job's cost per record beyond bare PyFlink's: with it,
pass-through can reach at most 1 / (bare's µs + this µs) records/s. It writes the µs per
record and cProfile's hottest functions to bench/results/operator-cost.txt.

    python -m bench.operator_cost [--records 100000]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import pstats
import time
from pathlib import Path

from bench.passthrough_job import PassRecords
from bench.run import DATA_TYPES, RESULTS, git_commit
from contract import scoring_pb2 as pb
from contract.values import make_record
from infra import paths
from samples.build import build_all
from scoring.loader import Servable
from scoring.manager import ModelManager
from scoring.options import ScoringOptions

TYPES = [f"wine-{i}" for i in range(DATA_TYPES)]


class ValueState:
    def __init__(self) -> None:
        self.v = None

    def value(self):
        return self.v

    def update(self, v) -> None:
        self.v = v

    def clear(self) -> None:
        self.v = None


class ListState:
    def __init__(self) -> None:
        self.items: list = []

    def add(self, v) -> None:
        self.items.append(v)

    def get(self):
        return list(self.items)

    def clear(self) -> None:
        self.items = []


class RuntimeContext:
    def get_index_of_this_subtask(self) -> int:
        return 0

    def get_state(self, descriptor) -> ValueState:
        return ValueState()

    def get_list_state(self, descriptor) -> ListState:
        return ListState()

    def get_metrics_group(self):
        return self

    def add_group(self, name: str):
        return self

    def gauge(self, name: str, value) -> None:
        pass


class BroadcastState(dict):
    def put(self, key, value) -> None:
        self[key] = value


class Context:
    """A keyed broadcast context: one for every call, its key set before each."""

    def __init__(self) -> None:
        self.key = ""
        self.broadcast = BroadcastState()

    def get_current_key(self) -> str:
        return self.key

    def get_broadcast_state(self, descriptor) -> BroadcastState:
        return self.broadcast

    def timer_service(self):
        return self

    def current_processing_time(self) -> int:
        return int(time.time() * 1000)

    def register_processing_time_timer(self, t: int) -> None:
        pass


class Unused:
    def predict(self, inputs):
        raise AssertionError("pass-through calls no model")


def operator_with_models() -> tuple[PassRecords, Context]:
    op = PassRecords(ScoringOptions())
    op.open(RuntimeContext())
    op.manager = ModelManager(lambda d: Servable(d.name, d.version, d.model_type, Unused()))
    ctx = Context()
    for data_type in TYPES:
        d = pb.ModelDescriptor(name=f"m-{data_type}", version=1, data_type=data_type, model_type=pb.PMML,
                               inline_bytes=b"-")
        list(op.process_broadcast_element(d.SerializeToString(), ctx))
    while op.manager.loading:  # the loads run on the manager's threads
        time.sleep(0.01)
        list(op._collect_loads())
    return op, ctx


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=100_000)
    args = p.parse_args(argv)
    op, ctx = operator_with_models()
    samples = build_all(paths.RUN / "samples", ["wine-pmml"])["wine-pmml"]
    rows = json.loads((samples / "samples.json").read_text())["inputs"]
    records = [(t, make_record(f"r-{i}", t, row).SerializeToString())
               for i, (t, row) in enumerate(zip(itertools.cycle(TYPES), itertools.islice(itertools.cycle(rows), 8000)))]

    def run(n: int) -> int:
        out = 0
        for data_type, raw in itertools.islice(itertools.cycle(records), n):
            ctx.key = data_type
            out += sum(1 for _ in op.process_element(raw, ctx))
        return out

    run(20_000)  # every data type swapped in, batches flowing
    started = time.perf_counter()
    outputs = run(args.records)
    us = (time.perf_counter() - started) / args.records * 1e6
    profiler = cProfile.Profile()
    profiler.runcall(run, args.records // 2)
    table = io.StringIO()
    pstats.Stats(profiler, stream=table).sort_stats("tottime").print_stats(20)
    text = (f"# ScoreRecords' own Python work per record, pass-through, no Flink (bench/operator_cost.py)\n"
            f"# commit {git_commit()}, {args.records:,} records, {DATA_TYPES} data types, wine records (13 inputs)\n\n"
            f"{us:.1f} us per record ({outputs:,} outputs)\n\ncProfile (its own overhead inflates the times):\n"
            + table.getvalue().split("\n", 4)[-1])
    out = Path(RESULTS) / "operator-cost.txt"
    out.write_text(text)
    print(text[:2000])


if __name__ == "__main__":
    main()
