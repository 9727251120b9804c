"""`model-store tail scores|dead-letters|events`: follow one of the job's output topics and
print a readable line per message (or, with --json, one JSON object per line).

Only committed messages are shown (`read_committed`): with exactly-once delivery a result
appears once the checkpoint that covers it completes.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass

from google.protobuf.json_format import MessageToDict
from kafka import KafkaConsumer

from contract import scoring_pb2 as pb
from contract.json_records import read_result
from contract.values import to_python
from model_store.kafka_config import client_config
from model_store.kafka_io import Kafka

State = pb.ModelEvent.State


@dataclass(frozen=True)
class Kind:
    message: type
    line: Callable[[object], str]
    parse: Callable[[bytes], object] | None = None  # default: message.FromString

    def read(self, value: bytes):
        return (self.parse or self.message.FromString)(value)


def clock(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


def value_text(value: pb.Value) -> str:
    try:
        v = to_python(value)
    except ValueError as err:
        return f"<{err}>"
    if hasattr(v, "shape"):
        flat = v.ravel()
        head = ", ".join(f"{x:.4g}" for x in flat[:4]) + (", ..." if flat.size > 4 else "")
        return f"[{head}] {list(v.shape)}"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    return str(v)


def score_line(r: pb.ScoringResult) -> str:
    outputs = " ".join(f"{k}={value_text(r.outputs[k])}" for k in sorted(r.outputs))
    return f"{clock(r.scoring_time_ms)}  {r.data_type}  {r.record_id}  {r.model_name} v{r.model_version}  {outputs}"


def dead_letter_line(d: pb.DeadLetter) -> str:
    model = f"  ({d.model_name} v{d.model_version})" if d.model_name else ""
    record = d.record_id or f"<{len(d.original)} bytes, not a record>"
    return f"{clock(d.time_ms)}  {d.data_type or '-'}  {record}  {d.stage}: {d.reason}{model}"


def event_line(e: pb.ModelEvent) -> str:
    model = f"{e.model_name} v{e.model_version}" if e.model_name else "-"
    stats = ("  " + " ".join(f"{k}={v:g}" for k, v in sorted(e.stats.items()))) if e.stats else ""
    return f"{clock(e.time_ms)}  {State.Name(e.state):<9}  {e.data_type or '-'}  {model}  {e.reason}{stats}"


KINDS = {
    "scores": Kind(pb.ScoringResult, score_line, read_result),  # results of JSON records are JSON
    "dead-letters": Kind(pb.DeadLetter, dead_letter_line),
    "events": Kind(pb.ModelEvent, event_line),
}


def render(kind: str, value: bytes, data_type: str = "", as_json: bool = False) -> str | None:
    """One message as a line, or None if it is filtered out."""
    try:
        message = KINDS[kind].read(value)
    except Exception as err:  # noqa: BLE001 - a foreign message on the topic: say so, go on
        return None if data_type else f"<{len(value)} bytes that are not a {KINDS[kind].message.__name__}: {err}>"
    if data_type and message.data_type != data_type:
        return None
    if as_json:
        return json.dumps(MessageToDict(message, preserving_proto_field_name=True))
    return KINDS[kind].line(message)


def follow(kafka: Kafka, topic: str, from_beginning: bool) -> Iterator[bytes]:
    """Committed values of `topic`, from now (or its beginning), until closed or interrupted."""
    consumer = KafkaConsumer(topic, **client_config(kafka).python_kwargs(), group_id=None, enable_auto_commit=False,
                             isolation_level="read_committed",
                             auto_offset_reset="earliest" if from_beginning else "latest")
    try:
        while not consumer.assignment():
            yield from _values(consumer.poll(timeout_ms=200))
        for partition in consumer.assignment():
            consumer.position(partition)  # "now" is fixed here, before we say so
        print(f"following {topic} from {'its beginning' if from_beginning else 'now'} (Ctrl-C stops)",
              file=sys.stderr, flush=True)
        while True:
            yield from _values(consumer.poll(timeout_ms=500))
    finally:
        consumer.close()


def _values(polled: dict) -> Iterator[bytes]:
    for records in polled.values():
        for r in records:
            yield r.value


def tail(kafka: Kafka, topic: str, kind: str, from_beginning: bool = False, data_type: str = "",
         as_json: bool = False, max_messages: int = 0) -> int:
    """Print the topic's messages until Ctrl-C (or `max_messages` shown); exit status 0."""
    shown = 0
    try:
        with closing(follow(kafka, topic, from_beginning)) as values:
            for value in values:
                line = render(kind, value, data_type, as_json)
                if line is not None:
                    print(line, flush=True)
                    shown += 1
                    if shown == max_messages:
                        break
    except KeyboardInterrupt:
        pass
    return 0
