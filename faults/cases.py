"""The cases of a faults run. Each returns one `CaseResult` per job it ran against.

- streamed faults (every job): records stream while the TaskManager or its Python workers
  are killed, the broker restarts, or a model is published while the job is down;
- model store faults (the exactly-once job): 500, 404, down, slow while a new version loads;
- a fresh job (no checkpoint) after the models topic was compacted;
- bad records (exactly-once job): one kind per case, then a fuzz of 10,000 mixed with good;
- bad models (exactly-once job): each while a current model keeps scoring a stream.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from contract import scoring_pb2 as pb
from contract import signing
from faults import bad_models, bad_records, crashing_model, disrupt
from faults.outputs import DEAD, EITHER, JobOutputs, Score, Sent, is_event, raw, records
from faults.report import EXACTLY_ONCE, CaseResult, Check
from faults.store import Fault
from faults.stream import Section
from faults.world import MAX_ARTIFACT_BYTES, MAX_RECORD_BYTES, RECOVERY_TIMEOUT_S, Job, World, say
from infra.job_harness import RunningJob, ScoringSetup
from infra.topics import EAGER_COMPACTION, wait_until_compacted
from model_store import cli
from model_store.repository import sha256_of
from scoring.rollout import takes_part

Event = pb.ModelEvent
Case = Callable[[World], list[CaseResult]]
ACCOUNT_TIMEOUT_S = 180


# ---- shared ------------------------------------------------------------------------------------
def last_models(scores: list[Score]) -> dict[str, str]:
    """Per data type, the model that scored its last record."""
    return {s.data_type: f"{s.model} v{s.version}" for s in scores}


def version_runs(scores: list[Score], data_type: str) -> list[int]:
    """The versions that scored a data type, in output order, repeats collapsed: [1, 2]."""
    return [v for v, _ in itertools.groupby(s.version for s in scores if s.data_type == data_type)]


def tallied(name: str, job: Job, items: list[Sent], started: float) -> CaseResult:
    """Wait for every item's outcome, then count: sent, scored, dead-lettered, lost, duplicated."""
    job.outputs.wait_accounted(items, ACCOUNT_TIMEOUT_S)
    t = job.outputs.tally(items)
    result = CaseResult(name, job.delivery, t.sent, t.scored, t.dead_lettered, t.lost, t.duplicated,
                        t.unexpected, time.monotonic() - started)
    result.check("every record as expected (scored, or dead-lettered with its reason)",
                 t.unexpected == 0, "; ".join(t.examples))
    return result


# ---- streamed faults ---------------------------------------------------------------------------
Disruption = Callable[[World, Section], list[str]]


def streamed(name: str, data_types: list[str], disruption: Disruption,
             restores: int = 0, changes: Callable[[World], dict[str, str]] = lambda w: {},
             more_checks: Callable[[Job, list[Score], CaseResult], None] = lambda j, s, r: None) -> Case:
    """Stream `data_types` to every job; disrupt; wait for recovery; account for every record.

    Each job must have restored a checkpoint at least `restores` times, and the models
    serving after recovery must be those before, but for `changes`."""
    def case(world: World) -> list[CaseResult]:
        for data_type in data_types:
            world.ensure_served(data_type, "wine-pmml" if data_type != "fault-tf" else "wine-tf")
        started = time.monotonic()
        with world.stream.section(name, data_types) as section:
            time.sleep(3)
            world.wait_recovered(section)
            before = {j.delivery: last_models(j.outputs.scores_of(section.ids_so_far())) for j in world.jobs}
            restored = {j.delivery: (j.job_id, world.restored(j)) for j in world.jobs}
            notes = disruption(world, section)
            waited = world.wait_recovered(section)
            notes.append(f"caught up {waited:.0f}s after the last disruption")
            time.sleep(3)
        results = []
        for job in world.jobs:
            r = tallied(name, job, records(section.confirmed(job.data_topic)), started)
            scores = job.outputs.scores_of(section.ids)
            r.models_before, r.models_after = before[job.delivery], last_models(scores)
            expected = {**r.models_before, **changes(world)}
            r.check("models after recovery are those before", r.models_after == expected,
                    f"expected {expected}")
            told = {t: job.outputs.serving().get(t) for t in r.models_after}
            r.check("model events tell the same models", told == r.models_after, f"events say {told}")
            job_id, restored_before = restored[job.delivery]
            # A job submitted again (after its JobManager died) counts its own restores.
            count = world.restored(job) - (restored_before if job.job_id == job_id else 0)
            if restores:
                r.check(f"restarted from a checkpoint (at least {restores} time(s))", count >= restores,
                        f"{count} restore(s)")
            more_checks(job, scores, r)
            unconfirmed = len(section.ids) - r.sent
            r.notes = notes + [f"{count} restore(s) from a checkpoint"] + (
                [f"{unconfirmed} sends not acknowledged by the broker (not counted)"] if unconfirmed else [])
            results.append(r)
        return results
    return case


def _recovery(world: World, section: Section, kill: Callable[[], str], kills: int,
              between: Callable[[], None] = lambda: None) -> list[str]:
    notes = []
    for i in range(kills):
        if i:
            notes.append(f"recovered in {world.wait_recovered(section):.0f}s")
        time.sleep(random.uniform(2, 4))  # mid-stream
        notes.append(kill())
        between()
        say(notes[-1])
    return notes


def taskmanager_kills(kills: int, data_types: list[str]) -> Case:
    return streamed(f"taskmanager-kill-x{kills}", data_types,
                    lambda w, s: _recovery(w, s, disrupt.kill_taskmanager, kills, disrupt.start_taskmanager),
                    restores=kills)


def python_worker_kills(kills: int) -> Case:
    return streamed(f"python-worker-kill-x{kills}", ["fault-wine"],
                    lambda w, s: _recovery(w, s, disrupt.kill_python_workers, kills), restores=kills)


def broker_restart(world: World, section: Section) -> list[str]:
    return [disrupt.restart_broker(world.broker, down_s=10)]


def publish_while_down(world: World, section: Section) -> list[str]:
    """The TaskManager dies; a new version is published; then the TaskManager comes back."""
    note = disrupt.kill_taskmanager()
    d = world.publish("recover-wine", "recover-wine", world.samples["wine-tf"] / "saved_model",
                      pb.TENSORFLOW_SAVED_MODEL)
    time.sleep(2)
    disrupt.start_taskmanager()
    for job in world.jobs:
        job.outputs.wait_event(is_event(Event.AVAILABLE, "recover-wine", d.version),
                               f"AVAILABLE recover-wine v{d.version}", RECOVERY_TIMEOUT_S)
    world.served["recover-wine"] = d.version
    return [note, f"published recover-wine v{d.version} while the TaskManager was down"]


def new_version_after_old(job: Job, scores: list[Score], r: CaseResult) -> None:
    if job.delivery == EXACTLY_ONCE:  # with at-least-once, replays may interleave the versions
        runs = version_runs(scores, "recover-wine")
        r.check("the old version, then the new one, never back", runs == [1, 2], f"versions {runs}")


# ---- a rollout across a TaskManager kill --------------------------------------------------------
ROLLOUT_GATE_RECORDS = 1500  # 30 s of the stream: the kill lands mid-rollout


def rollout_across_kill(mode: int) -> Case:
    """While v1 serves and records stream, v2 is published in shadow (or as a 50% canary by
    record id) with a 1,500-record gate; the TaskManager is killed 5 s into the rollout. The
    rollout resumes from the checkpoint (not from zero), its gate passes on the comparisons
    and v2 is promoted. Shadow: v1 served every record until the promotion. Canary: v2 served
    only records its sticky hash gave it, before and after the restore."""
    label = pb.RolloutPolicy.Mode.Name(mode).lower()
    name = f"{label}-taskmanager-kill"
    policy = pb.RolloutPolicy(mode=mode, canary_percent=50 if mode == pb.RolloutPolicy.CANARY else 0,
                              gate=pb.Gate(min_records=ROLLOUT_GATE_RECORDS, min_agreement=0.99, tolerance=1e-6))

    def case(world: World) -> list[CaseResult]:
        job = world.eo
        world.ensure_served(name, "wine-pmml", [job])
        started, restored = time.monotonic(), world.restored(job)
        with world.stream.section(name, [name], [job.data_topic]) as section:
            time.sleep(2)
            v2 = world.publish(name, name, _own_pmml(world, name, 2), pb.PMML, [job], rollout=policy)
            began = _wait(job, is_event(Event.ROLLOUT_STARTED, name, v2.version), "ROLLOUT_STARTED v2", 120)
            time.sleep(5)
            decided_early = job.outputs.events(lambda e: e.data_type == name and e.state in (
                Event.PROMOTED, Event.ABANDONED))
            notes = [disrupt.kill_taskmanager()]
            disrupt.start_taskmanager()
            promoted = _wait(job, is_event(Event.PROMOTED, name, v2.version), "PROMOTED v2", RECOVERY_TIMEOUT_S)
            sent_before_promoted = len(section.ids_so_far())
            time.sleep(3)
        r = tallied(name, job, records(section.confirmed(job.data_topic)), started)
        r.check("the rollout started, and was still undecided when the TaskManager died",
                began is not None and not decided_early, f"decided before the kill: {decided_early[:1]}")
        count = world.restored(job) - restored
        r.check("restarted from a checkpoint", count >= 1, f"{count} restore(s)")
        starts = job.outputs.events(is_event(Event.ROLLOUT_STARTED, name, v2.version))
        r.check("one ROLLOUT_STARTED: the rollout resumed from the checkpoint, not started again",
                len(starts) == 1, f"{len(starts)} ROLLOUT_STARTED events")
        compared = promoted.stats["records"] if promoted else 0
        r.check(f"v2 PROMOTED by its gate on >= {ROLLOUT_GATE_RECORDS:,} records compared",
                compared >= ROLLOUT_GATE_RECORDS, f"{compared:,.0f} compared" if promoted else "no PROMOTED event")
        scores = job.outputs.scores_of(section.ids)
        after = {s.version for s in job.outputs.scores_of(section.ids[sent_before_promoted:])}
        r.check("records sent after PROMOTED scored by v2", after == {v2.version}, f"versions {sorted(after)}")
        if mode == pb.RolloutPolicy.SHADOW:
            runs = version_runs(scores, name)
            r.check("v1 served every record until the promotion, v2 after", runs == [1, v2.version],
                    f"versions {runs}")
        else:
            served, strays = _canary_served(scores, policy, f"{name}:{v2.version}")
            r.check("v2 served records during the canary, only those its hash chose", served and not strays,
                    f"{len(served)} served by v2 before v1's last result, {len(strays)} of them not in "
                    f"the canary, e.g. {strays[:3]}")
        r.models_before, r.models_after = {name: f"{name} v1"}, last_models(scores)
        r.notes = notes + [f"{count} restore(s) from a checkpoint", f"gate compared {compared:,.0f} records"]
        return [r]
    return case


def _canary_served(scores: list[Score], policy: pb.RolloutPolicy, salt: str) -> tuple[list[str], list[str]]:
    """The records v2 scored, in output order before v1's last result (after the promotion v2
    scores everything); and those of them the canary's sticky hash keeps with v1."""
    last_v1 = max((i for i, s in enumerate(scores) if s.version == 1), default=-1)
    served = [s.record_id for s in scores[:last_v1] if s.version != 1]
    return served, [i for i in served if not takes_part(policy, salt, i, {})]


# ---- model store faults -------------------------------------------------------------------------
FaultOn = Callable[[World, str], AbstractContextManager]


def store_fault(kind: str, fault_on: FaultOn, state: int, reason: str, requests: int | None) -> Case:
    """While data type `store-<kind>` is served by v1, v2 is published with the store at fault:
    v1 keeps scoring, v2 ends in `state` (ERROR, or AVAILABLE once a slow store answers) after
    `requests` requests. With the store well again, v3 loads."""
    name = f"store-{kind}"

    def case(world: World) -> list[CaseResult]:
        job = world.eo
        world.ensure_served(name, "wine-pmml", [job])
        started = time.monotonic()
        with world.stream.section(name, [name], [job.data_topic]) as section:
            time.sleep(2)
            with fault_on(world, f"/{name}/2/"):
                v2 = world.publish(name, name, _own_pmml(world, name, 2), pb.PMML, [job])
                outcome = _wait(job, is_event(state, name, v2.version), f"{Event.State.Name(state)} v2")
            asked = world.store.requests_under(f"/{name}/2/")
            final = v2
            if state == Event.ERROR:
                final = world.publish(name, name, _own_pmml(world, name, 3), pb.PMML, [job])
                _wait(job, is_event(Event.AVAILABLE, name, final.version), "AVAILABLE v3")
            time.sleep(2)
        r = tallied(name, job, records(section.confirmed(job.data_topic)), started)
        wanted = [reason] + (["keeps its current model"] if state == Event.ERROR else [])
        r.check(f"v2 {Event.State.Name(state)} with '{reason}'",
                outcome is not None and all(w in outcome.reason for w in wanted),
                outcome.reason[:300] if outcome else "no such event")
        if requests is not None:
            r.check(f"the store was asked {requests} time(s) for v2", asked == requests, f"asked {asked}")
        scores = job.outputs.scores_of(section.ids)
        runs = version_runs(scores, name)
        r.check("v1 kept scoring until the new version was ready", runs == [1, final.version],
                f"versions {runs}")
        r.models_before, r.models_after = {name: f"{name} v1"}, last_models(scores)
        return [r]
    return case


def first_model_retried(world: World) -> list[CaseResult]:
    """A data type's only model fails to load (the store answers 500), then the store recovers:
    the job retries the load by itself and serves the model, with no republish. Meanwhile its
    records are dead-lettered saying why (the faults jobs run --no-model-policy dead-letter)."""
    name, job, started = "first-retried", world.eo, time.monotonic()
    rows = world.sample_inputs("wine-pmml")
    send = functools.partial(job.setup.send_records, name)
    nudges: list[str] = []  # sent while waiting for an event: scored or dead-lettered, as timing has it
    with world.store.fault(f"/{name}/1/", Fault(status=500)):
        v1 = world.publish(name, name, _own_pmml(world, name, 1), pb.PMML, [job])
        error = _wait_while_sending(job, send, rows, nudges, is_event(Event.ERROR, name, v1.version))
        while_failed = send(rows[:20], f"{name}-failed")
        job.outputs.wait_accounted(records(while_failed), ACCOUNT_TIMEOUT_S)
    recovered = time.monotonic()
    ready = _wait_while_sending(job, send, rows, nudges, is_event(Event.AVAILABLE, name, v1.version))
    waited = time.monotonic() - recovered
    after = send(rows[:20], f"{name}-after")
    r = tallied(name, job, records(nudges, EITHER, "no model has been published|failed to load")
                + records(while_failed, DEAD, "failed to load") + records(after), started)
    retry = f"retries in {world.retry_after_s:.0f}s"
    r.check(f"v1's ERROR says it {retry}", error is not None and retry in error.reason,
            error.reason[:300] if error else "no such event")
    r.check("v1 served after the store recovered, with no republish", ready is not None,
            f"{waited:.0f}s after the store recovered")
    scores = job.outputs.scores_of(after)
    r.check("records after the recovery scored by v1", {s.version for s in scores} == {v1.version},
            f"versions {sorted({s.version for s in scores})}")
    r.models_before, r.models_after = {}, last_models(scores)
    return [r]


def fresh_after_compaction(world: World) -> list[CaseResult]:
    """Many versions per data type on a compacted models topic, the log cleaner run, then a job
    with no checkpoint: it serves what a job that saw every message would, the latest deploy or
    rollback of each data type. The jobs on the cluster fill its slots, so this one runs on a
    MiniCluster, against the same broker and store."""
    name, started = "fresh-after-compaction", time.monotonic()
    setup = ScoringSetup(world.bootstrap, world.repo, world.store.base_url, world.workdir / name,
                         models_topic_config=EAGER_COMPACTION)
    model = world.samples["wine-pmml"] / "model.pmml"
    for _ in range(4):
        setup.publish(f"{name}-deploys", f"{name}-deploys", "pmml", model)     # v1..v4
    for _ in range(3):
        setup.publish(f"{name}-rollback", f"{name}-rollback", "pmml", model)   # v1..v3
    setup.rollback(f"{name}-rollback", 2)
    time.sleep(2)  # past segment.ms: the next message closes the segment that holds the others
    setup.publish(f"{name}-single", f"{name}-single", "pmml", model)
    left = wait_until_compacted(world.bootstrap, setup.topics["models"], at_most=3)
    expected = {f"{name}-deploys": 4, f"{name}-rollback": 2, f"{name}-single": 1}
    job = Job(EXACTLY_ONCE, setup, "minicluster", JobOutputs(setup))
    try:
        with RunningJob(setup.job_args(), setup.workdir / "job.log"):
            ids = [i for t in expected for i in setup.send_records(t, world.sample_inputs("wine-pmml"), t)]
            r = tallied(name, job, records(ids), started)
            scores = job.outputs.scores_of(ids)
    finally:
        job.outputs.close()
    r.check("the log cleaner left one message per data type", left == 3, f"{left} of 9 messages left")
    served = {s.data_type: s.version for s in scores}
    r.check("each data type served by its latest deploy or rollback", served == expected, f"served {served}")
    r.models_before, r.models_after = {}, last_models(scores)
    return [r]


def _wait_while_sending(job: Job, send: Callable, rows: list[dict], sent: list[str], match,
                        timeout_s: float = 120) -> pb.ModelEvent | None:
    """Model events are reported as records pass the operator: send one a second until one
    matches (the ids go to `sent`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sent.extend(send(rows[:1], f"nudge-{len(sent)}-{time.time_ns()}"))
        time.sleep(1)
        found = job.outputs.events(match)
        if found:
            return found[0]
    return None


def _own_pmml(world: World, name: str, version: int) -> Path:
    """The wine model with bytes of its own: a download, not a hit in the job's local cache."""
    return bad_models.commented_pmml(world.samples["wine-pmml"] / "model.pmml", f"{name} v{version}",
                                     world.workdir / f"{name}-v{version}.pmml")


def _wait(job: Job, match, what: str, timeout_s: float = 240) -> pb.ModelEvent | None:
    try:
        return job.outputs.wait_event(match, what, timeout_s)
    except TimeoutError:
        return None


def status(code: int) -> FaultOn:
    return lambda world, prefix: world.store.fault(prefix, Fault(status=code))


def delay(seconds: float) -> FaultOn:
    return lambda world, prefix: world.store.fault(prefix, Fault(delay_s=seconds))


def down(world: World, prefix: str) -> AbstractContextManager:
    return world.store.down()


# ---- bad records ----------------------------------------------------------------------------------
@dataclass
class Bad:
    payloads: list[bytes]
    items: list[Sent]


def by_id(make: Callable, reason: str, n: int = 12) -> Callable[[World, str, str], Bad]:
    def build(world: World, data_type: str, label: str) -> Bad:
        rng, rows = random.Random(label), world.sample_inputs("wine-pmml")
        made = [make(rng, rows[i % len(rows)], f"{label}-bad-{i}", data_type) for i in range(n)]
        return Bad([m.SerializeToString() for m in made], records([m.record_id for m in made], DEAD, reason))
    return build


def by_bytes(make: Callable, reason: str, n: int = 12) -> Callable[[World, str, str], Bad]:
    def build(world: World, data_type: str, label: str) -> Bad:
        rng, rows = random.Random(label), world.sample_inputs("wine-pmml")
        goods = [bad_records.record(f"{label}-base-{i}", data_type, rows[i % len(rows)]).SerializeToString()
                 for i in range(n)]
        fields = sorted(rows[0])
        payloads = []
        for good in goods:
            value = make(rng, good)
            while value in payloads or bad_records.scorable(value, data_type, fields, MAX_RECORD_BYTES):
                value = make(rng, good)
            payloads.append(value)
        return Bad(payloads, raw(payloads, MAX_RECORD_BYTES, reason))
    return build


def model_throws(world: World, data_type: str, label: str) -> Bad:
    made = [bad_records.not_a_jpeg(f"{label}-bad-{i}", data_type) for i in range(12)]
    return Bad([m.SerializeToString() for m in made], records([m.record_id for m in made], DEAD, "the model threw"))


def bad_record_case(name: str, build: Callable[[World, str, str], Bad], sample: str = "wine-pmml") -> Case:
    """Good records, the bad ones, good records again: the bad ones dead-lettered with their
    reason, every good one scored by the current model."""
    data_type = "bad-digits" if sample == "digits-tf" else "bad-wine"

    def case(world: World) -> list[CaseResult]:
        job = world.eo
        world.ensure_served(data_type, sample, [job])
        started = time.monotonic()
        rows = world.sample_inputs(sample)
        good = job.setup.send_records(data_type, rows, f"{name}-good-a")
        bad = build(world, data_type, name)
        job.setup.send_raw(bad.payloads)
        good += job.setup.send_records(data_type, rows, f"{name}-good-b")
        r = tallied(name, job, records(good) + bad.items, started)
        current = (data_type, world.served[data_type])
        versions = {(s.model, s.version) for s in job.outputs.scores_of(good)}
        r.check("the current model scored every good record", versions == {current}, f"scored by {sorted(versions)}")
        r.models_before = r.models_after = {data_type: f"{data_type} v{current[1]}"}
        reasons = {d.reason.split(":")[0][:80] for item in bad.items[:3] for d in job.outputs.dead_letters_of(item)}
        r.notes.append(f"reasons: {sorted(reasons)}")
        return [r]
    return case


def fuzz(n_bad: int) -> Case:
    def case(world: World) -> list[CaseResult]:
        job, data_type = world.eo, "fuzz-wine"
        world.ensure_served(data_type, "wine-pmml", [job])
        started = time.monotonic()
        mix = bad_records.fuzz(world.sample_inputs("wine-pmml"), data_type, "fuzz", n_bad, n_bad // 4,
                               MAX_RECORD_BYTES)
        job.setup.send_raw(mix.payloads)
        r = tallied(f"fuzz-{n_bad}", job, mix.good + mix.bad, started)
        good, bad = job.outputs.tally(mix.good), job.outputs.tally(mix.bad)
        r.check("good records scored == good records sent", good.scored == good.sent == len(mix.good),
                f"{good.scored} of {good.sent}")
        r.check("every bad record dead-lettered with a reason, none scored",
                bad.dead_lettered == bad.sent and bad.unexpected == 0, "; ".join(bad.examples))
        r.notes.append(f"{len(mix.good)} good + {len(mix.bad)} bad records, shuffled")
        return [r]
    return case


def poison_record(world: World) -> list[CaseResult]:
    """A record on which the model kills its Python worker (as an abort in native code would):
    the task fails, restarts from its checkpoint, reads the record again and dies again, until
    the crash journal names it. Then it is dead-lettered, and every other record scored once.
    On the guarded job: a MiniCluster whose Python workers are processes of their own."""
    job, data_type = world.guarded_job(), "poison"
    _announce_crashing_model(world, data_type, 1)
    job.outputs.wait_event(is_event(Event.ACCEPTED, data_type, 1), f"ACCEPTED {data_type} v1", RECOVERY_TIMEOUT_S)
    started = time.monotonic()
    rows = [{"x": float(i)} for i in range(50)]
    good = job.setup.send_records(data_type, rows, "poison-good-a")
    pill = job.setup.send_records(data_type, [{"x": crashing_model.CRASH_ON}], "poison-pill")
    good += job.setup.send_records(data_type, rows, "poison-good-b")
    r = tallied("poison-record", job, records(good) + records(pill, DEAD, "the worker process died 2 times"), started)
    r.check("exactly once: no record scored twice across the restarts", r.duplicated == 0, f"{r.duplicated} twice")
    r.notes.append(f"{len(good)} good records around the one that aborts its worker")
    return [r]


def load_crash(world: World) -> list[CaseResult]:
    """A version whose load kills its Python worker (as a crash in a native loader would),
    published while v1 serves: the task fails, restarts, reads the descriptor again (broadcast
    state, the models topic), loads it and dies again, until the load journal refuses it: ERROR
    after --max-load-crashes (2) crashes, and no third load. v1 scores every record, before,
    during and after the restarts, each once. On the guarded job, as `poison-record`."""
    job, data_type = world.guarded_job(), "load-crash"
    _announce_crashing_model(world, data_type, 1)
    job.outputs.wait_event(is_event(Event.ACCEPTED, data_type, 1), f"ACCEPTED {data_type} v1", RECOVERY_TIMEOUT_S)
    sent = job.setup.send_records(data_type, [{"x": 0.0}], "load-crash-primer")
    job.outputs.wait_event(is_event(Event.AVAILABLE, data_type, 1), f"AVAILABLE {data_type} v1", RECOVERY_TIMEOUT_S)
    started = time.monotonic()
    rows = [{"x": float(i)} for i in range(50)]
    sent += job.setup.send_records(data_type, rows, "load-crash-a")
    _announce_crashing_model(world, data_type, 2, abort_on_load=True)
    refused = _wait_while_sending(job, _sender(job, data_type), rows, sent,
                                  is_event(Event.ERROR, data_type, 2, "crashed the Python worker 2 times"),
                                  timeout_s=RECOVERY_TIMEOUT_S)
    sent += job.setup.send_records(data_type, rows, "load-crash-b")
    r = tallied("load-crash", job, records(sent), started)
    r.check("ERROR v2: its load crashed the worker 2 times, it is not loaded again", refused is not None,
            refused.reason[:300] if refused else "no such event")
    served = {(s.model, s.version) for s in job.outputs.scores_of(sent)}
    r.check("v1 scored every record", served == {(data_type, 1)}, f"scored by {sorted(served)}")
    r.check("exactly once: no record scored twice across the restarts", r.duplicated == 0, f"{r.duplicated} twice")
    r.models_before = r.models_after = {data_type: f"{data_type} v1"}
    r.notes.append(f"{len(sent)} records while v2's load aborted the worker")
    return [r]


def _sender(job: Job, data_type: str) -> Callable[[list[dict], str], list[str]]:
    return lambda rows, prefix: job.setup.send_records(data_type, rows, prefix)


def _announce_crashing_model(world: World, data_type: str, version: int, **artifact) -> pb.ModelDescriptor:
    """faults/crashing_model.py's model (inline, signed by the run's key) as `version` of a model
    named after `data_type`, announced to the guarded job; `artifact` adds to its JSON."""
    data = json.dumps({"crash_on": crashing_model.CRASH_ON, **artifact}).encode()
    d = pb.ModelDescriptor(name=data_type, version=version, data_type=data_type,
                           model_type=crashing_model.CRASHING_TYPE, inline_bytes=data,
                           sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), sequence=cli.next_sequence())
    signing.sign(d, world.signing_key)
    world.guarded_job().setup.announce([d.SerializeToString()])
    return d


# ---- bad models ------------------------------------------------------------------------------------
@dataclass
class Verdict:
    match: Callable[[pb.ModelEvent], bool]
    what: str


Attempt = Callable[[World, Path], tuple[list[Verdict], list[Callable[[], Check]]]]


def bad_model_case(name: str, attempt: Attempt, on: Callable[[World], Job] = lambda w: w.eo,
                   guard: str = "guard") -> Case:
    """While `guard` is served by v1 and scores a stream, the bad model arrives; each expected
    REJECTED/ERROR event must come with its reason, and v1 must score every record."""
    def case(world: World) -> list[CaseResult]:
        job = on(world)
        world.ensure_served(guard, "wine-pmml", [job])
        started = time.monotonic()
        scratch = world.workdir / "bad-models" / name
        scratch.mkdir(parents=True, exist_ok=True)
        with world.stream.section(name, [guard], [job.data_topic]) as section:
            time.sleep(1)
            verdicts, post_checks = attempt(world, scratch)
            found = [(v, _wait(job, v.match, v.what, 240)) for v in verdicts]
            time.sleep(1)
        r = tallied(name, job, records(section.confirmed(job.data_topic)), started)
        for verdict, event in found:
            r.check(verdict.what, event is not None, event.reason[:300] if event else "no such event")
        r.checks += [post() for post in post_checks]
        served = {(s.model, s.version) for s in job.outputs.scores_of(section.ids)}
        r.check("the current model kept scoring", served == {(guard, world.served[guard])},
                f"scored by {sorted(served)}")
        r.models_before = r.models_after = {guard: f"{guard} v{world.served[guard]}"}
        r.notes = [f"{Event.State.Name(e.state)}: {e.reason[:160]}" for _, e in found if e]
        return [r]
    return case


def published(world: World, source: Path, kind: int, inline: bool = False,
              **changes) -> pb.ModelDescriptor:
    """`source` stored as the next `guard` version (of type `kind`); its descriptor, with
    `changes`, announced."""
    stored = world.repo.publish("guard", source, kind, "guard")
    d = world.descriptor(stored, inline, **changes)
    world.announce([d.SerializeToString()], [world.eo])
    return d


def error(d: pb.ModelDescriptor, reason: str) -> Verdict:
    return Verdict(is_event(Event.ERROR, "guard", d.version, reason), f"ERROR v{d.version}: '{reason}'")


def malformed_descriptors(world: World, scratch: Path):
    junk = b"\x0a\x7f" + b"not a model descriptor"  # field 1 claims 127 bytes, has 22
    empty = pb.ModelDescriptor(data_type="guard", model_type=pb.PMML)
    world.announce([junk, empty.SerializeToString()], [world.eo])
    return [Verdict(is_event(Event.REJECTED, reason=f"model message of {len(junk)} bytes is not a ModelDescriptor"),
                    "REJECTED: not a ModelDescriptor"),
            Verdict(is_event(Event.REJECTED, reason="is invalid: name is empty"),
                    "REJECTED: name is empty, version 0, no artifact")], []


def unknown_model_type(world: World, scratch: Path):
    d = published(world, world.samples["wine-pmml"] / "model.pmml", pb.PMML, model_type=42)
    return [Verdict(is_event(Event.REJECTED, reason="model_type 42 has no backend"),
                    f"REJECTED v{d.version}: model_type 42 has no backend")], []


def sha256_mismatch(world: World, scratch: Path):
    d = published(world, world.samples["wine-pmml"] / "model.pmml", pb.PMML, sha256="0" * 64)
    return [error(d, "Refused: republish the model")], []


def over_the_size_limit(world: World, scratch: Path):
    big = bad_models.commented_pmml(world.samples["wine-pmml"] / "model.pmml", "x" * MAX_ARTIFACT_BYTES,
                                    scratch / "big.pmml")
    d1 = published(world, big, pb.PMML)
    # Fresh bytes: a verified artifact with the same SHA-256 would come from the local cache.
    fresh = bad_models.commented_pmml(world.samples["wine-pmml"] / "model.pmml", "fresh", scratch / "fresh.pmml")
    d2 = published(world, fresh, pb.PMML, size_bytes=1000)
    return [error(d1, f"over the limit of {MAX_ARTIFACT_BYTES}"),
            error(d2, "sent more than the 1000 bytes expected")], []


def outside_allow_list(*locations: Callable[[World], str]) -> Attempt:
    def attempt(world: World, scratch: Path):
        verdicts = []
        for location in locations:
            d = published(world, world.samples["wine-pmml"] / "model.pmml", pb.PMML, location=location(world))
            verdicts.append(error(d, "outside the allow-list"))
        return verdicts, [lambda: _decoy_untouched(world)]
    return attempt


def _decoy_untouched(world: World) -> Check:
    asked = sum(world.decoy.requests.values())
    return Check("the other host received no request", asked == 0, f"{asked} requests")


def corrupt_pmml(world: World, scratch: Path):
    d1 = published(world, bad_models.corrupt_pmml(scratch / "random.pmml"), pb.PMML)
    d2 = published(world, bad_models.not_pmml(scratch / "html.pmml"), pb.PMML)
    return [error(d1, "is not well-formed XML"), error(d2, "not <PMML>")], []


def pmml_xxe(world: World, scratch: Path):
    secret = scratch / "secret.txt"
    secret.write_text("FAULTS-TOP-SECRET")
    evil = bad_models.xxe_pmml(world.samples["wine-pmml"] / "model.pmml", secret, world.decoy.base_url,
                               scratch / "xxe.pmml")
    d = published(world, evil, pb.PMML)

    def secret_kept() -> Check:
        leaked = [e for e in world.eo.outputs.events() if "FAULTS-TOP-SECRET" in e.reason]
        return Check("the local file's content is in no model event", not leaked, f"{len(leaked)} leaks")
    return [error(d, "declares a DOCTYPE")], [secret_kept, lambda: _decoy_untouched(world)]


def corrupt_saved_models(world: World, scratch: Path):
    escape = f"faults-escaped-{scratch.parent.parent.name}.txt"
    cases = [(bad_models.garbage_targz(scratch / "garbage.tar.gz"), "not a readable .tar.gz"),
             (bad_models.no_graph_targz(scratch / "empty.tar.gz"), "holds no saved_model.pb"),
             (bad_models.broken_graph_targz(scratch / "broken.tar.gz"), "cannot be loaded by TensorFlow"),
             (bad_models.traversal_targz(scratch / "traversal.tar.gz", escape), "not a readable .tar.gz")]
    verdicts = [error(published(world, path, pb.TENSORFLOW_SAVED_MODEL), reason) for path, reason in cases]

    def nothing_escaped() -> Check:
        found = list(world.workdir.rglob(escape)) + list(Path("/tmp").glob(escape))
        return Check("no archive member was written outside its folder", not found, f"found {found}")
    return verdicts, [nothing_escaped]


def warm_up_fails(world: World, scratch: Path):
    throws = bad_models.warm_up_throws(world.samples["digits-tf"] / "saved_model", scratch / "throws")
    d1 = published(world, throws, pb.TENSORFLOW_SAVED_MODEL)
    d2 = published(world, bad_models.nan_model(), pb.TENSORFLOW_SAVED_MODEL)
    return [error(d1, "the model threw"), error(d2, "non-finite output")], []


def verification_mismatch(world: World, scratch: Path):
    drifted = bad_models.drifted_verification(world.samples["wine-pmml"] / "model.pmml", scratch / "drifted.pmml")
    d = published(world, drifted, pb.PMML)
    return [error(d, "verify failed: sample 1 of 16: output 'predicted_cultivar'")], []


def cache_swapped(world: World, scratch: Path):
    """Someone who can write the TaskManager's disk rewrites the cached artifact of the model
    that serves, and its Python worker dies: the restarted worker must find that the entry no
    longer holds the bytes it is named by, fetch them again from the store and serve on."""
    stored = world.repo.get("guard", world.served["guard"])
    genuine, digest = world.repo.artifact_path(stored), stored.sha256
    cached = sorted((world.eo.setup.workdir / "model-cache").glob(f"{digest}/*"))
    tampered = bad_models.commented_pmml(genuine, "swapped in the cache", scratch / "tampered.pmml").read_bytes()
    for entry in cached:
        entry.write_bytes(tampered)
    say(disrupt.kill_python_workers())
    world.wait_recovered()

    def fetched_again() -> Check:
        genuine_now = [entry.is_file() and sha256_of(entry) == digest for entry in cached]
        return Check("the swapped cache entry was fetched again, not used as found",
                     bool(cached) and all(genuine_now), f"{len(cached)} entries of {digest[:12]}: {genuine_now}")
    return [], [fetched_again]


def older_without_rollback(world: World, scratch: Path):
    current = world.served["guard"]
    d = world.descriptor(world.repo.get("guard", current))
    world.announce([d.SerializeToString()], [world.eo])
    return [Verdict(is_event(Event.REJECTED, "guard", current, "publish it with action ROLLBACK"),
                    f"REJECTED v{current}: not newer, no rollback flag")], []


def pickled_payloads(world: World, scratch: Path):
    """Pickles that would create a file if anything unpickled them: as a PMML and a SavedModel
    (inline), and inside a record."""
    marker = scratch / "unpickled"
    payload = scratch / "payload.pkl"
    payload.write_bytes(bad_models.pickle_payload(marker))
    d1 = published(world, payload, pb.PMML, inline=True)
    d2 = published(world, payload, pb.TENSORFLOW_SAVED_MODEL, inline=True)
    row = {**world.sample_inputs("wine-pmml")[0]}
    hostile = bad_records.record("pickle-record", "guard", row)
    hostile.inputs["alcohol"].bytes_value = payload.read_bytes()
    hostile.inputs["code"].string_value = f"__import__('pathlib').Path('{marker}').touch()"
    world.eo.setup.send_raw([hostile.SerializeToString()])

    def never_unpickled() -> Check:
        world.eo.outputs.wait_accounted([Sent("pickle-record", DEAD)], ACCOUNT_TIMEOUT_S, settle_s=0)
        dead = world.eo.outputs.dead_letters_of(Sent("pickle-record", DEAD))
        return Check("nothing unpickled or evaluated a payload", not marker.exists() and len(dead) == 1,
                     f"marker file created: {marker.exists()}; the record's dead letter: "
                     f"{dead[0].reason[:100] if dead else 'none'}")
    return [error(d1, "is not well-formed XML"), error(d2, "not a readable .tar.gz")], [never_unpickled]


# ---- the catalogue ------------------------------------------------------------------------------------
def catalogue(kills: int = 3, fuzz_bad: int = 10_000, tensorflow: bool = True) -> dict[str, Case]:
    """Every case by name, in the order a full run takes them. Recoveries reload every model
    the job accepted: the TensorFlow one (slow to load) joins at the TaskManager kills."""
    return {
        f"python-worker-kill-x{kills}": python_worker_kills(kills),
        "broker-restart": streamed("broker-restart", ["fault-wine"], broker_restart),
        f"taskmanager-kill-x{kills}": taskmanager_kills(
            kills, ["fault-wine", "fault-tf"] if tensorflow else ["fault-wine"]),
        "publish-during-recovery": streamed(
            "publish-during-recovery", ["recover-wine", "fault-tf"], publish_while_down, restores=1,
            changes=lambda w: {"recover-wine": f"recover-wine v{w.served['recover-wine']}"},
            more_checks=new_version_after_old),
        "shadow-taskmanager-kill": rollout_across_kill(pb.RolloutPolicy.SHADOW),
        "canary-taskmanager-kill": rollout_across_kill(pb.RolloutPolicy.CANARY),
        "store-500": store_fault("500", status(500), Event.ERROR, "failed 3 times; last: HTTP 500", 3),
        "store-404": store_fault("404", status(404), Event.ERROR, "HTTP 404", 1),
        "store-down": store_fault("down", down, Event.ERROR, "failed 3 times; last: ConnectionError", None),
        "store-slow": store_fault("slow", delay(35), Event.ERROR, "failed 3 times; last: ReadTimeout", 3),
        "store-slow-ok": store_fault("slow-ok", delay(6), Event.AVAILABLE, "", 1),
        "first-retried": first_model_retried,
        "fresh-after-compaction": fresh_after_compaction,
        "random-bytes": bad_record_case("random-bytes", by_bytes(bad_records.random_bytes, "")),
        "truncated-protobuf": bad_record_case("truncated-protobuf", by_bytes(
            bad_records.truncated, "not a DataRecord protobuf|missing input(s)|record has no|no model has been published")),
        "unknown-data-type": bad_record_case("unknown-data-type", by_id(
            bad_records.unknown_type, "no model has been published for this data type")),
        "missing-inputs": bad_record_case("missing-inputs", by_id(bad_records.missing_inputs, "missing input(s)")),
        "wrong-types": bad_record_case("wrong-types", by_id(bad_records.wrong_type, bad_records.WRONG_TYPE_REASONS)),
        "nan-inf": bad_record_case("nan-inf", by_id(bad_records.non_finite, "only finite numbers can be scored")),
        "over-size": bad_record_case("over-size", by_bytes(
            lambda rng, good: bad_records.oversize(rng, good, MAX_RECORD_BYTES),
            f"over the {MAX_RECORD_BYTES}-byte limit", n=3)),
        "bad-json": bad_record_case("bad-json", by_bytes(
            bad_records.bad_json, "bad JSON record|the model takes a|missing input(s)|no model has been published")),
        "model-throws": bad_record_case("model-throws", model_throws, sample="digits-tf"),
        f"fuzz-{fuzz_bad}": fuzz(fuzz_bad),
        "poison-record": poison_record,
        "load-crash": load_crash,
        "malformed-descriptor": bad_model_case("malformed-descriptor", malformed_descriptors),
        "unknown-model-type": bad_model_case("unknown-model-type", unknown_model_type),
        "sha256-mismatch": bad_model_case("sha256-mismatch", sha256_mismatch),
        "size-over-limit": bad_model_case("size-over-limit", over_the_size_limit),
        "location-cloud-metadata": bad_model_case("location-cloud-metadata", outside_allow_list(
            lambda w: "http://169.254.169.254/latest/meta-data/iam/security-credentials/")),
        "location-file-outside-store": bad_model_case("location-file-outside-store", outside_allow_list(
            lambda w: "file:///etc/passwd",
            lambda w: (w.repo.root / "guard" / "1" / "model.pmml").as_uri())),
        "location-other-host": bad_model_case("location-other-host", outside_allow_list(
            lambda w: f"{w.decoy.base_url}/guard/1/model.pmml",
            lambda w: f"http://127.0.0.1:{w.store.port}@127.0.0.1:{w.decoy.port}/guard/1/model.pmml")),
        "corrupt-pmml": bad_model_case("corrupt-pmml", corrupt_pmml),
        "pmml-xxe": bad_model_case("pmml-xxe", pmml_xxe),
        "corrupt-savedmodel": bad_model_case("corrupt-savedmodel", corrupt_saved_models),
        "warm-up-throws-or-nan": bad_model_case("warm-up-throws-or-nan", warm_up_fails),
        "verification-mismatch": bad_model_case("verification-mismatch", verification_mismatch),
        "older-version-no-rollback": bad_model_case("older-version-no-rollback", older_without_rollback),
        "pickle-payloads": bad_model_case("pickle-payloads", pickled_payloads),
        "cache-swapped": bad_model_case("cache-swapped", cache_swapped),
    }


QUICK = ["python-worker-kill-x1", "broker-restart", "taskmanager-kill-x1", "store-500", "first-retried",
         "fuzz-10000"]

