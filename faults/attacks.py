"""Attacks on what the job runs, against a job that trusts only the run's key and reads Kafka
as a principal with its ACLs: an unsigned model, one signed by another key, signed bytes
swapped inline or at the store, a signature replayed for another version, an old signed
ROLLBACK replayed, a signed rollout altered on the way, a signed SavedModel that reads a
file or calls its saver, and a principal without ACLs on the models topic publishing.
Each must be refused with its reason while the current model scores every record."""

from __future__ import annotations

from pathlib import Path

from kafka.errors import KafkaError

from contract import scoring_pb2 as pb
from contract import signing
from faults import bad_models
from faults.cases import Case, Verdict, bad_model_case
from faults.outputs import is_event
from faults.report import Check
from faults.world import APP, World
from model_store import cli
from model_store.kafka_io import consume, kafka_problem, produce_keyed
from model_store.repository import StoredModel, pack_saved_model

GUARD = "signed-guard"
Event = pb.ModelEvent


def _stored(world: World, source: Path, kind: int = pb.PMML) -> StoredModel:
    return world.repo.publish(GUARD, source, kind, GUARD)


def _unsigned(world: World, stored: StoredModel, inline: bool = False) -> pb.ModelDescriptor:
    return cli.descriptor_for(world.repo, stored, world.store.base_url, 1 << 30 if inline else 0)


def _send(world: World, d: pb.ModelDescriptor) -> None:
    world.guarded_job().setup.announce([d.SerializeToString()])


def _pmml(world: World) -> Path:
    return world.samples["wine-pmml"] / "model.pmml"


def refused(state: int, d: pb.ModelDescriptor, reason: str) -> Verdict:
    return Verdict(is_event(state, GUARD, d.version, reason), f"{Event.State.Name(state)} v{d.version}: '{reason}'")


def unsigned(world: World, scratch: Path):
    d = _unsigned(world, _stored(world, _pmml(world)))
    _send(world, d)
    return [refused(Event.REJECTED, d, "is not signed")], []


def another_key(world: World, scratch: Path):
    signing.new_key_pair(scratch / "stranger")
    d = _unsigned(world, _stored(world, _pmml(world)))
    signing.sign(d, signing.load_private_key(scratch / "stranger" / "private.pem"))
    _send(world, d)
    return [refused(Event.REJECTED, d, "which this job does not trust")], []


def swapped_inline_bytes(world: World, scratch: Path):
    d = world.descriptor(_stored(world, _pmml(world)), inline=True)
    d.inline_bytes = bad_models.commented_pmml(_pmml(world), "not what was signed", scratch / "other.pmml").read_bytes()
    d.size_bytes = len(d.inline_bytes)
    _send(world, d)
    return [refused(Event.REJECTED, d, "a field was altered after signing")], []


def swapped_at_the_store(world: World, scratch: Path):
    # Bytes of its own: the job caches artifacts by SHA-256, and would load v1's cached bytes
    # (the signed ones) without asking the store at all.
    stored = _stored(world, bad_models.commented_pmml(_pmml(world), "signed", scratch / "signed.pmml"))
    d = world.descriptor(stored)  # signed, by location
    artifact = world.repo.artifact_path(stored)  # the same size, other bytes: the SHA-256 must catch it
    artifact.write_bytes(artifact.read_bytes().replace(b"<!-- signed -->", b"<!-- evil!! -->", 1))
    _send(world, d)
    return [refused(Event.ERROR, d, "Refused: republish the model")], []


def replayed_signature(world: World, scratch: Path):
    serving = world.descriptor(world.repo.get(GUARD, world.served[GUARD]))
    d = _unsigned(world, _stored(world, _pmml(world)))
    d.signature, d.signing_key_id = serving.signature, serving.signing_key_id
    _send(world, d)
    return [refused(Event.REJECTED, d, "the signature was replayed from another one")], []


def old_rollback_replayed(world: World, scratch: Path):
    """A ROLLBACK the trusted key signed long ago (sequence 1), sent again: it verifies, and
    the data type's high-water mark refuses it."""
    d = world.descriptor(world.repo.get(GUARD, world.served[GUARD]), action=pb.ModelDescriptor.ROLLBACK,
                         sequence=1)
    _send(world, d)
    return [refused(Event.REJECTED, d, "a replayed or out-of-date statement")], []


def rollout_altered_after_signing(world: World, scratch: Path):
    """A signed canary at 1%, turned into 100% and its gate's checks into nothing on the way."""
    policy = pb.RolloutPolicy(mode=pb.RolloutPolicy.CANARY, canary_percent=1,
                              gate=pb.Gate(min_records=1000, min_agreement=0.99))
    d = world.descriptor(_stored(world, _pmml(world)), rollout=policy)
    d.rollout.canary_percent, d.rollout.gate.min_agreement = 100, 0
    _send(world, d)
    return [refused(Event.REJECTED, d, "a field was altered after signing")], []


def signed_file_reader(world: World, scratch: Path):
    """Signed by the trusted key, and still refused: the graph check does not trust signers."""
    marker = scratch / "written-by-the-model"
    _file_reading_saved_model(scratch / "saved_model", marker)
    packed = scratch / "model.tar.gz"
    pack_saved_model(scratch / "saved_model", packed)
    d = world.descriptor(_stored(world, packed, pb.TENSORFLOW_SAVED_MODEL))
    _send(world, d)

    def nothing_written() -> Check:
        return Check("the model's code never ran (no file written)", not marker.exists(), str(marker))
    return [refused(Event.ERROR, d, "refused before loading: it uses ReadFile")], [nothing_written]


def signed_saver_call(world: World, scratch: Path):
    """Signed, and its serving function calls the saver's own save function (SaveV2 writes
    wherever its prefix says): refused though the checkpoint ops are the model's own."""
    calling = bad_models.saver_calling(world.samples["wine-tf"] / "saved_model", scratch / "saved_model")
    packed = scratch / "model.tar.gz"
    pack_saved_model(calling, packed)
    d = world.descriptor(_stored(world, packed, pb.TENSORFLOW_SAVED_MODEL))
    _send(world, d)
    return [refused(Event.ERROR, d, "a checkpoint op where more than the model's own saver reaches it")], []


def producer_without_acls(world: World, scratch: Path):
    """An application allowed only to send records publishes a model the trusted key signed:
    the broker refuses the write, so the job never sees it."""
    d = world.descriptor(_stored(world, _pmml(world)))
    topic = world.guarded_job().setup.topics["models"]
    try:
        produce_keyed(world.as_principal(APP), topic, [(GUARD.encode(), d.SerializeToString())])
        outcome = "the broker accepted the write"
    except KafkaError as err:
        outcome = kafka_problem(err)

    def refused_by_the_broker() -> Check:
        return Check(f"the broker refused {APP.name}'s write to the models topic",
                     "TopicAuthorizationFailed" in outcome, outcome[:200])

    def never_on_the_topic() -> Check:
        versions = [pb.ModelDescriptor.FromString(v).version for v in consume(world.bootstrap, topic, timeout_s=3)]
        return Check(f"v{d.version} never reached the models topic", d.version not in versions,
                     f"versions on the topic: {versions}")
    return [], [refused_by_the_broker, never_on_the_topic]


def _file_reading_saved_model(target: Path, marker: Path) -> None:
    import tensorflow as tf

    @tf.function(input_signature=[{"alcohol": tf.TensorSpec([None], tf.float32, name="alcohol")}])
    def serve(inputs):
        stolen = tf.io.read_file("/etc/passwd")
        tf.io.write_file(str(marker), stolen)
        return {"label": inputs["alcohol"] * 0 + tf.cast(tf.strings.length(stolen), tf.float32)}

    holder = tf.Module()
    holder.serve = serve
    tf.saved_model.save(holder, str(target), signatures={"serving_default": serve})


def cases(tensorflow: bool = True) -> dict[str, Case]:
    attempts = {"unsigned-model": unsigned, "signed-by-another-key": another_key,
                "signed-bytes-swapped-inline": swapped_inline_bytes, "signed-bytes-swapped-at-store": swapped_at_the_store,
                "signature-replayed": replayed_signature, "old-rollback-replayed": old_rollback_replayed,
                "rollout-altered-after-signing": rollout_altered_after_signing,
                "producer-without-acls": producer_without_acls}
    if tensorflow:
        attempts["signed-file-reading-savedmodel"] = signed_file_reader
        attempts["signed-savedmodel-calling-its-saver"] = signed_saver_call
    return {name: bad_model_case(name, attempt, on=World.guarded_job, guard=GUARD) for name, attempt in attempts.items()}
