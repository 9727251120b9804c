"""The plain-consumer baseline: what a user would write instead of the job. One Python
process with kafka-python consumes records, scores them in batches of 64 with the project's
own backends, produces a ScoringResult each, and commits its offsets only after the results
are flushed (at-least-once). No state, no swaps, no exactly-once.

    python -m bench.plain_consumer --bootstrap-servers B --data-topic D --scores-topic S \\
        --model-type pmml|tensorflow --artifact PATH --records N
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer

from contract import scoring_pb2 as pb
from contract.model_types import BY_NAME
from contract.values import inputs_of
from scoring import messages
from scoring.backends.registry import backend_for
from scoring.batch import score_batch, warm_up

COMMIT_EVERY = 1_000  # records: flush the results, then commit the offsets that produced them


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--data-topic", required=True)
    p.add_argument("--scores-topic", required=True)
    p.add_argument("--model-type", choices=sorted(BY_NAME), required=True)
    p.add_argument("--artifact", required=True)
    p.add_argument("--records", type=int, required=True, help="stop after scoring this many")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--group-id", default="plain-consumer")
    args = p.parse_args(argv)

    model = backend_for(BY_NAME[args.model_type]).load(Path(args.artifact))
    warm_up(model)
    consumer = KafkaConsumer(args.data_topic, bootstrap_servers=args.bootstrap_servers, group_id=args.group_id,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=args.batch_size)
    producer = KafkaProducer(bootstrap_servers=args.bootstrap_servers, acks="all", linger_ms=5)
    scored = uncommitted = 0
    try:
        while scored < args.records:
            for batch in consumer.poll(timeout_ms=200).values():
                records = [pb.DataRecord.FromString(r.value) for r in batch]
                outcomes = score_batch(model, [inputs_of(r) for r in records])
                for record, outcome in zip(records, outcomes, strict=True):
                    producer.send(args.scores_topic, messages.result(record, "plain", 1, outcome.outputs or {}))
                scored += len(records)
                uncommitted += len(records)
            if uncommitted >= COMMIT_EVERY or (uncommitted and scored >= args.records):
                producer.flush()
                consumer.commit()
                uncommitted = 0
    finally:
        producer.close()
        consumer.close()
        model.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
