"""SavedModels whose graphs can reach the file system or start processes are refused before
TensorFlow loads them.

A SavedModel is code: `tf.io.read_file`, `tf.io.write_file`, `tf.py_function` and friends run
inside the TaskManager with its rights. The check reads `saved_model.pb` as a protobuf (no
TensorFlow code of the model runs) and looks at every node of every graph and of every
function in its library, nested calls included. The variables' own checkpoint ops (SaveV2,
RestoreV2, ...) are allowed where every SavedModel has them: in the functions its saver runs.
A job may allow named ops for a data type (`--allow-model-ops`).
"""

from __future__ import annotations

from collections.abc import Iterable

from scoring.backends.base import UnsafeOp

# TensorFlow ops that read or write files, run Python, or write debug/summary output to disk.
FILE_AND_PROCESS_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "FileSystemSetConfiguration",
    "PyFunc", "PyFuncStateless", "EagerPyFunc",
    "InitializeTableFromTextFile", "InitializeTableFromTextFileV2", "LoadAndRemapMatrix",
    "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2",
    "TextLineDataset", "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset", "LMDBDataset",
    "ExperimentalLMDBDataset", "SqlDataset", "ExperimentalSqlDataset", "SaveDataset", "SaveDatasetV2",
    "LoadDataset", "SnapshotDataset", "SnapshotDatasetV2", "CacheDataset", "CacheDatasetV2",
    "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "FixedLengthRecordReader",
    "FixedLengthRecordReaderV2", "TFRecordReader", "TFRecordReaderV2", "LMDBReader",
    "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints",
    "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary", "WriteScalarSummary",
    "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary",
    "WriteRawProtoSummary", "ImportEvent",
    "DebugIdentity", "DebugIdentityV2", "DebugNanCount", "DebugNumericSummary", "DebugNumericSummaryV2",
    "GcsConfigureCredentials", "GcsConfigureBlockCache",
})
# What the saver of every SavedModel does with the model's own variables directory.
SAVER_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "Save", "Restore", "SaveSlices",
                       "RestoreSlice"})


def unsafe_ops(saved_model_pb: bytes, allowed: Iterable[str] = ()) -> list[UnsafeOp]:
    """Every node whose op may touch the file system or start a process, but for `allowed`."""
    # The whole package first: importing one of its proto modules while another loader thread
    # is inside `import tensorflow` trips the import machinery's deadlock guard ("partially
    # initialized module 'tensorflow.core.protobuf.meta_graph_pb2'"; found by make faults).
    import tensorflow  # noqa: F401
    from tensorflow.core.protobuf import saved_model_pb2

    model = saved_model_pb2.SavedModel.FromString(saved_model_pb)
    allowed = set(allowed)
    refused = FILE_AND_PROCESS_OPS - allowed
    findings: list[UnsafeOp] = []
    for meta_graph in model.meta_graphs:
        graph = meta_graph.graph_def
        functions = {f.signature.name: f for f in graph.library.function}
        saver = _saver_functions(meta_graph, functions)
        scopes = [("the graph", graph.node, False)] + [
            (f"function {name}", f.node_def, name in saver) for name, f in functions.items()]
        for where, nodes, is_saver in scopes:
            for n in nodes:
                if n.op in refused and not (is_saver and n.op in SAVER_OPS):
                    findings.append(UnsafeOp(n.op, n.name, where))
                elif n.op == "PrintV2" and "PrintV2" not in allowed and _prints_to_a_file(n):
                    findings.append(UnsafeOp("PrintV2", n.name, where, "printing to a file"))
    return findings


def _prints_to_a_file(node) -> bool:
    """tf.print writes to stderr by default; its output_stream may also name a file."""
    return "output_stream" in node.attr and node.attr["output_stream"].s.decode().startswith("file")


def _saver_functions(meta_graph, functions: dict) -> set[str]:
    """The functions the saver's save and restore nodes call, and what they call in turn."""
    names = {meta_graph.saver_def.restore_op_name, meta_graph.saver_def.save_tensor_name.split(":")[0]} - {""}
    start = [n for n in meta_graph.graph_def.node if n.name in names]
    reached: set[str] = set()
    todo = [f for n in start for f in _called(n)]
    while todo:
        name = todo.pop()
        if name in reached or name not in functions:
            continue
        reached.add(name)
        todo += [f for n in functions[name].node_def for f in _called(n)]
    return reached


def _called(node) -> list[str]:
    """Functions a node refers to in its attributes (calls, loop bodies, branches)."""
    out = []
    for value in node.attr.values():
        if value.HasField("func"):
            out.append(value.func.name)
        out += [f.name for f in value.list.func]
    return out
