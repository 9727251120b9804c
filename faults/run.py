"""`make faults`: every fault and bad-input case against the scoring job on the standalone
cluster, a Kafka broker of its own and the model store. Writes reports/faults.json, prints
the same as a table, exits non-zero if a record was lost, one was duplicated with
exactly-once delivery, or a check failed.

    python -m faults.run [--only taskmanager-kill-x3,fuzz-10000] [--kills 3] [--fuzz 10000]
                         [--deliveries exactly-once,at-least-once] [--report reports/faults.json]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from pathlib import Path

from faults import at_scale, attacks
from faults.cases import catalogue
from faults.report import AT_LEAST_ONCE, EXACTLY_ONCE, CaseResult, table, write_json
from faults.world import World, say
from infra import paths

REPORT = paths.ROOT / "reports" / "faults.json"


def run(names: list[str] | None, kills: int, fuzz_bad: int, deliveries: tuple[str, ...],
        workdir: Path, tensorflow: bool = True) -> list[CaseResult]:
    # The at-scale cases last: the first of them restarts the cluster and ends the other jobs.
    cases = {**catalogue(kills, fuzz_bad, tensorflow), **attacks.cases(tensorflow), **at_scale.cases()}
    unknown = sorted(set(names or []) - set(cases))
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {sorted(cases)}")
    results: list[CaseResult] = []
    with World(workdir, deliveries) as world:
        for name in [n for n in cases if not names or n in names]:
            say(f"case {name} ...")
            started = time.monotonic()
            try:
                found = cases[name](world)
            except Exception as err:  # report it and go on with the next case
                traceback.print_exc()
                found = [CaseResult(name, EXACTLY_ONCE, seconds=time.monotonic() - started)]
                found[0].check("the case ran to its end", False, f"{type(err).__name__}: {err}"[:500])
            for r in found:
                say(f"case {r.name} [{r.delivery}]: sent {r.sent}, scored {r.scored}, dead-lettered "
                    f"{r.dead_lettered}, lost {r.lost}, duplicated {r.duplicated} -> "
                    f"{'ok' if r.ok else 'FAILED'}")
            results.extend(found)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--kills", type=int, default=3, help="kill -9s per kill case")
    parser.add_argument("--fuzz", type=int, default=10_000, help="bad records in the fuzz case")
    parser.add_argument("--deliveries", default=f"{EXACTLY_ONCE},{AT_LEAST_ONCE}",
                        help="jobs to run the streamed faults against, one per delivery guarantee")
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups on `kill` too
    workdir = paths.RUN / "faults" / time.strftime("%Y%m%d-%H%M%S")
    deliveries = tuple(d for d in args.deliveries.split(",") if d)
    if EXACTLY_ONCE not in deliveries:
        parser.error("the exactly-once job is needed: the bad-input cases run against it")
    results = run([n for n in args.only.split(",") if n], args.kills, args.fuzz, deliveries, workdir)
    write_json(results, args.report)
    print(table(results), flush=True)
    print(f"\nreport: {args.report}")
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
