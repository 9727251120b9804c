"""SavedModels are refused before they load unless every op they use is on the allow-list;
the checkpoint ops only where the model's own saver alone reaches them."""

from __future__ import annotations

import os

import pytest

from contract import scoring_pb2 as pb
from faults import bad_models
from model_store.fetcher import ArtifactFetcher, FetchPolicy
from model_store.repository import pack_saved_model
from scoring.backends import graph_check
from scoring.backends.tensorflow import TensorFlowBackend
from scoring.errors import ModelLoadError
from scoring.loader import load_servable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def saved_model(tmp_path, serve, name: str = "model", holder=None) -> pb.ModelDescriptor:
    import tensorflow as tf

    holder = holder or tf.Module()
    holder.serve = serve
    directory = tmp_path / name
    tf.saved_model.save(holder, str(directory), signatures={"serving_default": serve})
    packed = tmp_path / f"{name}.tar.gz"
    pack_saved_model(directory, packed)
    return pb.ModelDescriptor(name=name, version=1, data_type="sneaky", model_type=pb.TENSORFLOW_SAVED_MODEL,
                              inline_bytes=packed.read_bytes())


def load(d: pb.ModelDescriptor, tmp_path, allowed=None):
    return load_servable(d, ArtifactFetcher(tmp_path / "cache", FetchPolicy.parse([])), allowed_ops=allowed)


def spec():
    import tensorflow as tf

    return [{"x": tf.TensorSpec([None], tf.float32, name="x")}]


def test_a_model_that_reads_a_file_outside_itself_is_refused_before_any_of_its_code_runs(tmp_path, monkeypatch):
    import tensorflow as tf

    secret = tmp_path / "secret.txt"
    secret.write_text("the TaskManager's credentials")
    marker = tmp_path / "written-by-the-model"

    @tf.function(input_signature=spec())
    def serve(inputs):
        stolen = tf.io.read_file(str(secret))
        tf.io.write_file(str(marker), stolen)
        return {"y": inputs["x"] + tf.cast(tf.strings.length(stolen), tf.float32)}

    d = saved_model(tmp_path, serve)
    loaded = []
    monkeypatch.setattr(TensorFlowBackend, "load", lambda *a, **k: loaded.append(a))
    with pytest.raises(ModelLoadError) as refused:
        load(d, tmp_path)
    reason = str(refused.value)
    assert "model v1 was refused before loading: it uses ReadFile (node" in reason
    assert "WriteFile (node" in reason and "in function __inference" in reason
    assert "--allow-model-ops sneaky=ReadFile+WriteFile" in reason
    assert loaded == [] and not marker.exists()

    # Allowing the ops for its data type does not admit reading a file the model does not carry.
    with pytest.raises(ModelLoadError) as still:
        load(d, tmp_path, {"sneaky": frozenset({"ReadFile", "WriteFile"})})
    assert "ReadFile (node 'ReadFile'" in str(still.value) and graph_check.OUTSIDE_ASSETS in str(still.value)
    assert "--allow-model-ops" not in str(still.value).split(graph_check.OUTSIDE_ASSETS)[1]
    assert loaded == [] and not marker.exists()


def asset_model(tmp_path, read) -> pb.ModelDescriptor:
    """A model whose serving function reads a file through `read(asset)`: the asset is the
    model's own vocabulary.txt."""
    import tensorflow as tf

    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "vocabulary.txt").write_text("alpha\nbeta\ngamma\n")
    holder = tf.Module()
    holder.vocabulary = tf.saved_model.Asset(str(tmp_path / "vocabulary.txt"))

    @tf.function(input_signature=spec())
    def serve(inputs):
        return {"y": inputs["x"] + tf.cast(tf.strings.length(read(holder.vocabulary)), tf.float32)}

    return saved_model(tmp_path, serve, "asset-model", holder)


def test_an_allowed_file_op_reads_the_models_own_assets_and_no_path_made_from_them(tmp_path):
    import tensorflow as tf

    allowed = {"sneaky": frozenset({"ReadFile"})}
    own = asset_model(tmp_path / "own", tf.io.read_file)
    with pytest.raises(ModelLoadError, match="ReadFile .*reaches the file system.*--allow-model-ops sneaky=ReadFile"):
        load(own, tmp_path / "own")
    servable = load(own, tmp_path / "own", allowed)
    assert servable.model.predict([{"x": 1.0}])[0]["y"] == 1 + len("alpha\nbeta\ngamma\n")

    beside = asset_model(tmp_path / "beside", lambda a: tf.io.read_file(tf.strings.join([a, "/../../../etc/hostname"])))
    with pytest.raises(ModelLoadError, match=graph_check.OUTSIDE_ASSETS[:40]):
        load(beside, tmp_path / "beside", allowed)


def test_ops_hidden_in_nested_functions_loops_and_python_are_found(tmp_path):
    import tensorflow as tf

    @tf.function
    def deep(x):
        return x + tf.cast(tf.size(tf.io.matching_files("/etc/*")), tf.float32)

    @tf.function(input_signature=spec())
    def serve(inputs):
        def body(i, total):
            return i + 1, total + deep(inputs["x"])

        _, total = tf.while_loop(lambda i, _: i < 2, body, [tf.constant(0), inputs["x"]])
        shell = tf.py_function(lambda v: v * 2, [total], tf.float32)
        tf.print("hi", output_stream="file:///tmp/printed-by-a-model")
        tf.print("to stderr is fine")
        return {"y": shell}

    d = saved_model(tmp_path, serve)
    found = graph_check.unsafe_ops(_pb_of(d, tmp_path))
    assert {f.op for f in found} == {"MatchingFiles", "EagerPyFunc", "PrintV2"}
    assert all(f.where.startswith("function ") for f in found)
    printing = next(f for f in found if f.op == "PrintV2")
    assert printing.describe().endswith(", printing to a file)")  # tf.print to stderr is not found


def _pb_of(d: pb.ModelDescriptor, tmp_path) -> bytes:
    from scoring.backends.tensorflow import unpack

    artifact = tmp_path / "artifact.tar.gz"
    artifact.write_bytes(d.inline_bytes)
    return (unpack(artifact) / "saved_model.pb").read_bytes()


@pytest.mark.parametrize("sample", ["wine-tf", "spam-tf", "digits-tf", "wine-tf-fragile"])
def test_the_sample_models_use_no_such_op_beyond_their_own_checkpoint(samples, sample):
    assert graph_check.unsafe_ops((samples[sample] / "saved_model" / "saved_model.pb").read_bytes()) == []


def test_a_serving_function_that_calls_the_savers_function_is_refused(samples, tmp_path):
    """SaveV2 writes wherever its prefix input says: allowed in the saver's own functions only."""
    original = samples["wine-tf"] / "saved_model"
    assert graph_check.unsafe_ops((original / "saved_model.pb").read_bytes()) == []
    calling = bad_models.saver_calling(original, tmp_path / "calling")
    found = graph_check.unsafe_ops((calling / "saved_model.pb").read_bytes())
    assert {f.op for f in found} >= {"SaveV2", "MergeV2Checkpoints"}
    assert all(f.where.startswith("function __inference__traced_save") and "more than the model's own saver" in f.detail
               for f in found)


@pytest.mark.parametrize("op", ["DatasetToTFRecord", "RecordInput", "DecodeProtoV2", "GenerateVocabRemapping",
                                "RpcServer", "RpcClient", "RpcCall", "DataServiceDataset", "RegisterDataset",
                                "SomeOpAddedInTensorFlow3"])
def test_an_op_not_known_to_be_safe_is_refused_naming_it_and_the_flag(samples, tmp_path, op):
    graph = (samples["wine-tf"] / "saved_model" / "saved_model.pb").read_bytes()
    found = graph_check.unsafe_ops(bad_models.with_nodes(graph, "__inference_serve", [(op, {})]))
    assert [(f.op, f.detail) for f in found] == [(op, "not on the allow-list of ops known to be safe")]
    assert graph_check.unsafe_ops(bad_models.with_nodes(graph, "__inference_serve", [(op, {})]), allowed=[op]) == []


def test_a_model_that_decodes_protos_is_refused_until_allowed(tmp_path):
    """tf.io.decode_proto's descriptor_source may name a file: DecodeProtoV2 is not on the list."""
    import tensorflow as tf

    @tf.function(input_signature=[{"x": tf.TensorSpec([None], tf.string, name="x")}])
    def serve(inputs):
        _, (values,) = tf.io.decode_proto(inputs["x"], "google.protobuf.DoubleValue", ["value"], [tf.float64])
        return {"y": tf.reshape(values, [-1])}

    d = saved_model(tmp_path, serve)
    with pytest.raises(ModelLoadError, match="DecodeProtoV2 .*not on the allow-list.*--allow-model-ops sneaky=DecodeProtoV2"):
        load(d, tmp_path)


def test_the_allow_list_covers_what_keras_and_tf_module_models_use():
    """Every common Keras layer kind and a tf.Module of tf.math, exported: no op outside ALLOWED_OPS."""
    from samples.op_inventory import inventory

    missing = {kind: sorted(ops - graph_check.ALLOWED_OPS) for kind, ops in inventory().items()}
    assert {kind: ops for kind, ops in missing.items() if ops} == {}
    assert len(missing) >= 15


def test_a_vocabulary_table_from_the_models_own_asset_is_admitted_with_its_op(tmp_path):
    import tensorflow as tf

    (tmp_path / "words.txt").write_text("alpha\nbeta\ngamma\n")
    holder = tf.Module()
    holder.table = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(str(tmp_path / "words.txt"), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                      tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)

    @tf.function(input_signature=[{"word": tf.TensorSpec([None], tf.string, name="word")}])
    def serve(inputs):
        return {"y": holder.table.lookup(inputs["word"])}

    d = saved_model(tmp_path, serve, holder=holder)
    ops = graph_check.ops_of(_saved_model_pb(d, tmp_path))
    table_op = next(op for op in ops if op.startswith("InitializeTableFromTextFile"))
    assert graph_check.unsafe_ops(_saved_model_pb(d, tmp_path), {table_op}) == []
    with pytest.raises(ModelLoadError, match=f"{table_op} .*--allow-model-ops sneaky={table_op}"):
        load(d, tmp_path)


def _saved_model_pb(d: pb.ModelDescriptor, tmp_path) -> bytes:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(d.inline_bytes)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("saved_model.pb"))
        return tar.extractfile(member).read()
