"""The PyFlink plumbing the scoring job's functions share: the output tags (RouteByTag on the
JVM splits them), the state descriptors, `ParseDescriptors` (bytes -> ModelDescriptor bytes;
invalid ones -> REJECTED model events) and the operator's Flink metrics. The scoring
functions are `jobs.score_batches` (the columnar default) and `jobs.score_records` (the
record path), over `jobs.score_models`.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from functools import partial

from pyflink.common import TypeInformation, Types
from pyflink.datastream import (
    ProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import (
    MapStateDescriptor,
)

from contract import scoring_pb2 as pb
from contract import signing
from jobs.flink_env import BYTES
from scoring import messages
from scoring.loader import DescriptorError, check_signed, parse_descriptor
from scoring.stats import OperatorTotals

log = logging.getLogger(__name__)

# The functions' outputs carry where they go in their first byte; the job's RouteByTag (JVM)
# strips it and sends them there. PyFlink's own side outputs would not do: in thread mode,
# what on_timer yields reaches the main output whatever its OutputTag (PyFlink 2.2.1).
SIDE_OUTPUTS = ("dead-letters", "model-events", "shadow-pairs")
MAIN, DEAD_LETTERS, MODEL_EVENTS, SHADOW_PAIRS = (bytes([i]) for i in range(1 + len(SIDE_OUTPUTS)))


def state_bytes(execution_mode: str) -> TypeInformation:
    """The type of the state that holds bytes. In thread mode, PyFlink 2.2.1 turns bytes
    state into tuples of ints (and fails on an empty value): it is pickled there instead."""
    return Types.PICKLED_BYTE_ARRAY() if execution_mode == "thread" else BYTES


def accepted_models(execution_mode: str) -> MapStateDescriptor:
    """The broadcast state: each data type's latest accepted descriptor."""
    return MapStateDescriptor("accepted-models", Types.STRING(), state_bytes(execution_mode))


def subtask_index(runtime_context: RuntimeContext) -> int:
    embedded = getattr(runtime_context, "_runtime_context", None)
    if embedded is not None:  # thread mode: PyFlink 2.2.1 calls a method Flink 2 moved
        return embedded.getTaskInfo().getIndexOfThisSubtask()
    return runtime_context.get_index_of_this_subtask()

Event = pb.ModelEvent
UNSIGNED_WARNING = ("NO --trusted-keys: this job runs ANY model descriptor written to its models topic, "
                    "signed or not, replays included. Give it --trusted-keys in production.")


class ParseDescriptors(ProcessFunction):
    """Keeps valid ModelDescriptors (signed by a trusted key, if the job has any); reports the
    others as REJECTED model events."""

    def __init__(self, trusted_keys: tuple[str, ...] = (), revoked: tuple[str, ...] = ()) -> None:
        self.trusted_keys, self.revoked = trusted_keys, revoked

    def open(self, runtime_context: RuntimeContext) -> None:
        self.trust = signing.load_trust(self.trusted_keys, self.revoked)
        if not self.trust.required:
            log.warning(UNSIGNED_WARNING)

    def process_element(self, value: bytes, ctx):
        try:
            d = parse_descriptor(value)
        except DescriptorError as err:
            yield MODEL_EVENTS + messages.model_event(Event.REJECTED, "", reason=str(err))
            return
        try:
            check_signed(d, self.trust)
        except DescriptorError as err:
            yield MODEL_EVENTS + messages.model_event(Event.REJECTED, d.data_type, d.name, d.version, str(err))
            return
        yield MAIN + value


class FlinkMetrics:
    """The operator's totals in its Flink metric group, the one way each mode allows.

    Process mode: gauges over the totals. PyFlink 2.2.1 drops what a counter counts inside
    on_timer (its timers run outside the operation's metrics scope), where most batches are
    scored; gauges are read at each bundle's end, inside it. Thread mode: counters, brought up
    to the totals after each change. A gauge there is a Python callable that Flink's metric
    threads call into the embedded interpreter, and a REST metrics query crashed the
    TaskManager that way (SIGSEGV in PEMJA)."""

    def __init__(self, group, totals: OperatorTotals, execution_mode: str) -> None:
        self.totals = totals
        self.counters, self.counted = {}, {}
        for f in fields(OperatorTotals):
            if execution_mode == "thread":
                self.counters[f.name], self.counted[f.name] = group.counter(f.name), 0
            else:
                group.gauge(f.name, partial(getattr, totals, f.name))

    def sync(self) -> None:
        """Thread mode: add to each counter what its total gained since the last call."""
        for name, counter in self.counters.items():
            gained = getattr(self.totals, name) - self.counted[name]
            if gained:
                counter.inc(gained)
                self.counted[name] += gained
