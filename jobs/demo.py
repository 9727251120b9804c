"""`make demo`: runs the pipeline end to end on this machine and stops what it started.

Starts a Kafka broker, sends records, runs the Kafka -> PyFlink -> Kafka copy job on a
local MiniCluster and reads the results back.
"""

from __future__ import annotations

import subprocess
import sys
import time

from infra.kafka_broker import default_broker
from infra.topics import consume, create_topics, produce, unique_topics


def main() -> int:
    broker = default_broker()
    print(f"[demo] starting Kafka on {broker.bootstrap_servers} ...", flush=True)
    broker.start()
    try:
        topics = unique_topics("demo-in", "demo-out")
        create_topics(broker.bootstrap_servers, topics.values())
        n = produce(broker.bootstrap_servers, topics["demo-in"],
                    (f"record {i}".encode() for i in range(1000)))
        print(f"[demo] sent {n} records to {topics['demo-in']}; running the job ...", flush=True)
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "jobs.copy_topic", "--bounded",
             "--bootstrap-servers", broker.bootstrap_servers,
             "--source-topic", topics["demo-in"], "--sink-topic", topics["demo-out"]],
            check=True,
        )
        out = consume(broker.bootstrap_servers, topics["demo-out"], expected=n)
        print(f"[demo] job finished in {time.monotonic() - started:.1f}s: "
              f"{len(out)} of {n} records arrived in {topics['demo-out']}")
        return 0 if len(out) == n else 1
    finally:
        broker.stop()
        print("[demo] Kafka stopped")


if __name__ == "__main__":
    sys.exit(main())
