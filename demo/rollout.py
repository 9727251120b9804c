"""`make demo-rollout`: safe rollouts on the real job, then everything stopped again.

Kafka, the model store and a Flink standalone cluster of their own; the scoring job
submitted with `flink run`; wine records streamed for two data types while:
1. wine v2 (a re-export of v1) runs in shadow, passes its gate and is promoted;
2. wine v3, a retrain with 2 shallow trees, runs in shadow and is abandoned: its classes
   agree, its probabilities do not;
3. wine v4 is a canary for 20% of customers, sticky per customer, passes its gate and waits
   for a person, who promotes it with `model-store promote`;
4. wine-tf v2 (with a bug: NaN outputs for magnesium > 150) passes its shadow and is
   promoted; then such records arrive, and the job rolls it back to v1 by itself.
Prints what the job reported and a summary: every record scored or dead-lettered once.
"""

from __future__ import annotations

import collections
import json
import re
import sys
import threading
import time
from contextlib import ExitStack

from contract import scoring_pb2 as pb
from contract.topics import TopicNames
from demo.stack import (
    RATE_PER_S,
    Stack,
    run_demo,
    say,
    start,
    stream_records,
    summary,
    wait_for,
    wait_until_done,
)
from infra import paths
from samples.build import build_all

State = pb.ModelEvent.State
CUSTOMERS = 500
BATCH = RATE_PER_S // 10  # records per round of stream_records


def customer_of(index: int) -> str:
    return f"customer-{index % CUSTOMERS}"


def index_of(record_id: str) -> int:
    """stream_records names the i-th record of round n `<type>-<n>-<i>`."""
    _, n, i = record_id.rsplit("-", 2)
    return int(n) * BATCH + int(i)


def canary_check(s: Stack, canary: int, serving: int) -> bool:
    """While both served (from the canary's first result to the current model's last one),
    did each customer see one version, and what share of records did the canary get?"""
    wine = {index_of(i): v for i, v in s.watcher.scored.items()
            if re.fullmatch(r"wine-\d+-\d+", i) and v in (canary, serving)}
    first = min((i for i, v in wine.items() if v == canary), default=None)
    last = max((i for i, v in wine.items() if v == serving), default=None)
    if first is None or last is None or last < first:
        say("canary: no overlap of the two versions was seen")
        return False
    seen = collections.defaultdict(set)
    for i in range(first, last + 1):
        if i in wine:
            seen[customer_of(i)].add(wine[i])
    both = sum(1 for versions in seen.values() if len(versions) > 1)
    share = sum(1 for i in range(first, last + 1) if wine.get(i) == canary) / max(1, last - first + 1)
    print(f"canary v{canary}: {share:.1%} of the records in between; {len(seen)} customers, "
          f"{both} saw both versions")
    return both == 0


def run() -> bool:
    topics = TopicNames.from_env()
    run_dir = paths.RUN / "demo-rollout" / time.strftime("%Y%m%d-%H%M%S")
    with ExitStack() as stack:
        say("building the sample models (once) ...")
        models = build_all(paths.RUN / "samples", ["wine-pmml", "wine-pmml-shallow", "wine-tf", "wine-tf-fragile"])
        rows = json.loads((models["wine-pmml"] / "samples.json").read_text())["inputs"]
        s = start(stack, run_dir, topics, extra_topics={"pairs": "scoring-pairs"},
                  job_args=("--pairs-topic", "scoring-pairs"))
        pmml = str(models["wine-pmml"] / "model.pmml")
        wine = ["--name", "wine", "--data-type", "wine", "--type", "pmml"]
        tf = ["--name", "wine-tf", "--data-type", "wine-tf", "--type", "tensorflow"]
        s.model_store("publish", *wine, "--path", pmml)
        s.model_store("publish", *tf, "--path", str(models["wine-tf"] / "saved_model"))

        sent: list[str] = []
        stop, breaking = threading.Event(), threading.Event()
        streams = [
            threading.Thread(target=stream_records, args=(s.bootstrap, topics.data, rows, sent, stop, "wine",
                                                          lambda row, i: dict(row, customer=customer_of(i)))),
            threading.Thread(target=stream_records, args=(s.bootstrap, topics.data, rows, sent, stop, "wine-tf",
                                                          lambda row, i: dict(row, magnesium=160.0)
                                                          if breaking.is_set() else row)),
        ]
        for t in streams:
            t.start()
        stack.callback(stop.set)
        say(f"streaming 'wine' and 'wine-tf' records at ~{RATE_PER_S}/s each")
        wait_for(s.watcher, State.AVAILABLE, "wine", 1)
        wait_for(s.watcher, State.AVAILABLE, "wine-tf", 1)

        say("1. wine v2 in shadow: it must agree with v1 on 1,000 records")
        s.model_store("publish", *wine, "--path", pmml, "--shadow", "--min-records", "1000", "--tolerance", "1e-9",
                      "--send-pairs")
        wait_for(s.watcher, State.PROMOTED, "wine", 2)

        say("2. wine v3, a retrain with 2 shallow trees, in shadow")
        s.model_store("publish", *wine, "--path", str(models["wine-pmml-shallow"] / "model.pmml"), "--shadow",
                      "--min-records", "1000", "--min-agreement", "0.95", "--tolerance", "0.05")
        wait_for(s.watcher, State.ABANDONED, "wine", 3)

        say("3. wine v4 as a canary for 20% of customers; a person promotes it once its gate passes")
        s.model_store("publish", *wine, "--path", pmml, "--canary", "20", "--entity-field", "customer",
                      "--min-records", "600", "--tolerance", "1e-9", "--manual-promotion")
        wait_for(s.watcher, State.GATE_PASSED, "wine", 4)
        s.model_store("promote", "--name", "wine", "--version", "4")
        wait_for(s.watcher, State.PROMOTED, "wine", 4)

        say("4. wine-tf v2 (NaN for magnesium > 150, which the shadow never sees) in shadow, watched after")
        s.model_store("publish", *tf, "--path", str(models["wine-tf-fragile"] / "saved_model"), "--shadow",
                      "--min-records", "500", "--tolerance", "1e-5", "--max-error-rate", "0.05", "--watch-s", "120")
        wait_for(s.watcher, State.PROMOTED, "wine-tf", 2)
        say("   now 'wine-tf' records with magnesium 160 arrive")
        breaking.set()
        wait_for(s.watcher, State.ROLLED_BACK, "wine-tf", 2)
        wait_for(s.watcher, State.AVAILABLE, "wine-tf", 1, reason="replaces wine-tf v2")
        time.sleep(3)
        stop.set()
        for t in streams:
            t.join()
        wait_until_done(s.watcher, sent)
        sticky = canary_check(s, canary=4, serving=2)
        return summary(s.watcher, sent) and sticky


if __name__ == "__main__":
    sys.exit(run_demo(run, __doc__))
