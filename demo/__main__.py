"""`make demo`: the scoring job end to end on this machine, then everything stopped again.

Starts Kafka, the model store and a Flink standalone cluster; makes a signing key and
submits the scoring job with `flink run`, trusting only that key; publishes the wine PMML
model (signed) as version 1 and streams wine records; publishes the TensorFlow wine model
(signed) as version 2 mid-stream; publishes version 3 unsigned, which the job refuses;
rolls back to version 1 (a signed statement of its own); replays the first signed publish,
which the job refuses by its sequence; prints a summary; shuts everything down.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from contextlib import ExitStack

from contract import scoring_pb2 as pb
from contract.topics import TopicNames
from demo.stack import (
    PHASE_S,
    RATE_PER_S,
    run_demo,
    say,
    start,
    stream_records,
    summary,
    wait_for,
    wait_until_done,
)
from infra import paths
from model_store.kafka_io import consume, produce
from samples.build import build_all


def run() -> bool:
    topics = TopicNames.from_env()
    run_dir = paths.RUN / "demo" / time.strftime("%Y%m%d-%H%M%S")
    with ExitStack() as stack:
        say("building the sample models (once) ...")
        models = build_all(paths.RUN / "samples", ["wine-pmml", "wine-tf"])
        rows = json.loads((models["wine-pmml"] / "samples.json").read_text())["inputs"]
        s = start(stack, run_dir, topics)
        wine = ["--name", "wine", "--data-type", "wine"]
        s.model_store("publish", *wine, "--type", "pmml", "--path", str(models["wine-pmml"] / "model.pmml"))

        sent: list[str] = []
        stop = threading.Event()
        producer = threading.Thread(target=stream_records, args=(s.bootstrap, topics.data, rows, sent, stop))
        producer.start()
        stack.callback(stop.set)
        say(f"streaming wine records at ~{RATE_PER_S}/s")
        time.sleep(PHASE_S)
        s.model_store("publish", *wine, "--type", "tensorflow", "--path", str(models["wine-tf"] / "saved_model"))
        time.sleep(PHASE_S * 1.5)
        say("publishing a model without the signing key: the job must refuse it and serve on")
        s.model_store("publish", *wine, "--type", "pmml", "--path", str(models["wine-pmml"] / "model.pmml"),
                      signed=False)
        wait_for(s.watcher, pb.ModelEvent.REJECTED, "wine", 3, "is not signed")
        s.model_store("rollback", "--name", "wine", "--version", "1")
        say("replaying v1's first signed publish: it verifies, and its old sequence is refused")
        first = consume(s.bootstrap, topics.models, expected=1, timeout_s=10, idle_s=0)[0]
        produce(s.bootstrap, topics.models, [first], key=b"wine")
        wait_for(s.watcher, pb.ModelEvent.REJECTED, "wine", 1, "a replayed or out-of-date statement")
        time.sleep(PHASE_S)
        stop.set()
        producer.join()
        wait_until_done(s.watcher, sent)
        return summary(s.watcher, sent)


if __name__ == "__main__":
    sys.exit(run_demo(run, __doc__))
