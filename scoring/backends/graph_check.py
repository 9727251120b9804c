"""SavedModels are refused before TensorFlow loads them unless every op they use is known to be
safe.

A SavedModel is code: `tf.io.read_file`, `tf.io.write_file`, `tf.py_function` and friends run
inside the TaskManager with its rights. The check reads `saved_model.pb` as a protobuf (no
TensorFlow code of the model runs) and looks at every node of every graph and of every
function in its library, nested calls included: each op must be on an allow-list (ALLOWED_OPS)
of what Keras and tf.Module models are made of. The variables' own checkpoint ops (SaveV2,
RestoreV2, ...) are allowed only in functions that the saver alone reaches: a serving function
that calls the saver's functions could write anywhere. A job may allow named ops for a data
type (`--allow-model-ops`); a file-reading op so admitted may read only the model's own
assets (saved_model_assets).
"""

from __future__ import annotations

from collections.abc import Iterable

from scoring.backends.base import UnsafeOp
from scoring.backends.saved_model_assets import GRAPH, PATH_INPUT, AssetPaths

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


# The ops a SavedModel may use: what Keras layers and tf.Module models are made of (the
# inventory of `python -m samples.op_inventory` over every common layer kind, and the sample
# models), and the pure math, array, string and image ops beside them. Anything else is refused
# with its name, also where nothing is known against it: --allow-model-ops admits it.
ALLOWED_OPS = frozenset({
    # graph plumbing, variables, tables, control flow
    "Const", "Identity", "IdentityN", "NoOp", "Placeholder", "PlaceholderWithDefault", "StopGradient",
    "PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If", "StatelessIf", "Case",
    "StatelessCase", "VarHandleOp", "ReadVariableOp", "AssignVariableOp", "VarIsInitializedOp",
    "DisableCopyOnRead", "HashTableV2", "MutableHashTableV2", "MutableDenseHashTableV2",
    "LookupTableFindV2", "LookupTableImportV2", "LookupTableExportV2", "LookupTableSizeV2",
    "TensorListFromTensor", "TensorListGetItem", "TensorListReserve", "TensorListSetItem",
    "TensorListStack", "TensorListLength", "TensorListElementShape", "EnsureShape", "CheckNumerics",
    "Assert", "PrintV2", "StringFormat",
    # element-wise math
    "Abs", "Acos", "Acosh", "Add", "AddN", "AddV2", "Asin", "Asinh", "Atan", "Atan2", "Atanh", "Ceil",
    "ClipByValue", "Cos", "Cosh", "Div", "DivNoNan", "Elu", "Equal", "Erf", "Erfc", "Exp", "Expm1",
    "Floor", "FloorDiv", "FloorMod", "Gelu", "Greater", "GreaterEqual", "IsFinite", "IsInf", "IsNan",
    "LeakyRelu", "Less", "LessEqual", "Log", "Log1p", "LogicalAnd", "LogicalNot", "LogicalOr", "Maximum",
    "Minimum", "Mod", "Mul", "MulNoNan", "Neg", "NotEqual", "Pow", "RealDiv", "Reciprocal", "Relu",
    "Relu6", "Round", "Rsqrt", "Select", "SelectV2", "Selu", "Sigmoid", "Sign", "Sin", "Sinh",
    "Softplus", "Softsign", "Sqrt", "Square", "SquaredDifference", "Sub", "Tan", "Tanh", "TruncateDiv",
    "TruncateMod", "Xdivy", "Xlogy", "Xlog1py", "Cast", "Bitcast", "ZerosLike", "OnesLike",
    # the gradients some exports keep in their function library
    "BiasAddGrad", "Conv2DBackpropFilter", "MaxPoolGrad", "ReluGrad", "SigmoidGrad", "TanhGrad",
    # reductions, linear algebra, neural network layers
    "All", "Any", "ArgMax", "ArgMin", "Max", "Mean", "Min", "Prod", "Sum", "Cumsum", "Cumprod",
    "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum", "BiasAdd", "Conv2D", "Conv3D",
    "Conv2DBackpropInput", "DepthwiseConv2dNative", "AvgPool", "AvgPool3D", "MaxPool", "MaxPoolV2",
    "MaxPool3D", "FusedBatchNorm", "FusedBatchNormV3", "Softmax", "LogSoftmax", "TopKV2", "InTopKV2",
    "Bucketize", "DenseBincount", "RaggedBincount", "OneHot", "UnsortedSegmentSum", "SegmentSum",
    "UnsortedSegmentMax", "UnsortedSegmentMean",
    # shapes and indexing
    "BroadcastArgs", "BroadcastTo", "ConcatV2", "ExpandDims", "Fill", "GatherNd", "GatherV2", "LinSpace",
    "MirrorPad", "Pack", "Pad", "PadV2", "Range", "Rank", "Reshape", "ReverseV2", "ScatterNd", "Shape",
    "ShapeN", "Size", "Slice", "Split", "SplitV", "Squeeze", "StridedSlice", "Tile", "Transpose", "Unpack",
    "Where", "RaggedTensorToTensor", "RaggedTensorFromVariant", "RaggedTensorToVariant",
    # strings (regular expressions are RE2)
    "AsString", "DecodeBase64", "EncodeBase64", "RegexFullMatch", "RegexReplace", "StaticRegexFullMatch",
    "StaticRegexReplace", "StringJoin", "StringLength", "StringLower", "StringNGrams", "StringSplitV2",
    "StringStrip", "StringToHashBucketFast", "StringToNumber", "StringUpper", "Substr",
    "UnicodeDecodeWithOffsets", "UnicodeTranscode", "ShardedFilename",
    # images, from bytes
    "AdjustContrastv2", "CropAndResize", "DecodeBmp", "DecodeGif", "DecodeImage", "DecodeJpeg",
    "DecodePng", "ResizeBicubic", "ResizeBilinear", "ResizeNearestNeighbor", "RGBToHSV", "HSVToRGB",
})
# What the saver of every SavedModel does with the model's own variables directory.
SAVER_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "Save", "Restore", "SaveSlices",
                       "RestoreSlice"})


def ops_of(saved_model_pb: bytes) -> set[str]:
    """Every op a SavedModel's graphs and function libraries name."""
    model = _parse(saved_model_pb)
    return {n.op for mg in model.meta_graphs
            for nodes in [mg.graph_def.node, *(f.node_def for f in mg.graph_def.library.function)] for n in nodes}


def _parse(saved_model_pb: bytes):
    # The whole package first: importing one of its proto modules while another loader thread
    # is inside `import tensorflow` trips the import machinery's deadlock guard ("partially
    # initialized module 'tensorflow.core.protobuf.meta_graph_pb2'"; found by make faults).
    import tensorflow  # noqa: F401
    from tensorflow.core.protobuf import saved_model_pb2

    return saved_model_pb2.SavedModel.FromString(saved_model_pb)


def unsafe_ops(saved_model_pb: bytes, allowed: Iterable[str] = ()) -> list[UnsafeOp]:
    """Every node whose op is not on the allow-list (nor `allowed` by the job), and every
    checkpoint op that something other than the model's own saver can reach."""
    model = _parse(saved_model_pb)
    admitted = ALLOWED_OPS | set(allowed)
    findings: list[UnsafeOp] = []
    for meta_graph in model.meta_graphs:
        graph = meta_graph.graph_def
        functions = {f.signature.name: f for f in graph.library.function}
        saver_only = _saver_functions(meta_graph, functions) - _served_functions(meta_graph, functions)
        assets = AssetPaths(meta_graph)
        scopes = [(GRAPH, "the graph", graph.node, False)] + [
            (name, f"function {name}", f.node_def, name in saver_only) for name, f in functions.items()]
        for scope, where, nodes, only_the_saver in scopes:
            for n in nodes:
                if n.op in PATH_INPUT and n.op in admitted - ALLOWED_OPS and not assets.reads_assets_only(scope, n):
                    findings.append(UnsafeOp(n.op, n.name, where, OUTSIDE_ASSETS, admissible=False))
                    continue
                detail = _refusal(n, admitted, only_the_saver)
                if detail is not None:
                    findings.append(UnsafeOp(n.op, n.name, where, detail))
    return findings


OUTSIDE_ASSETS = ("it reads a path that is not one of the model's assets (a constant or a computed path "
                  "could name any file): --allow-model-ops admits reading only the SavedModel's own assets/ "
                  "files, so export the file with the model as a tf.saved_model.Asset")


def _refusal(node, admitted: set[str], only_the_saver: bool) -> str | None:
    """Why this node is refused (None: it is not)."""
    if node.op == "PrintV2" and _prints_to_a_file(node) and "PrintV2" not in admitted - ALLOWED_OPS:
        return "printing to a file"
    if node.op in admitted:
        return None
    if node.op in SAVER_OPS:
        return None if only_the_saver else "a checkpoint op where more than the model's own saver reaches it"
    if node.op in FILE_AND_PROCESS_OPS:
        return "it reaches the file system or starts processes"
    return "not on the allow-list of ops known to be safe"


def _prints_to_a_file(node) -> bool:
    """tf.print writes to stderr by default; its output_stream may also name a file."""
    return "output_stream" in node.attr and node.attr["output_stream"].s.decode().startswith("file")


def _saver_functions(meta_graph, functions: dict) -> set[str]:
    """The functions the saver's save and restore nodes call, and what they call in turn."""
    names = {meta_graph.saver_def.restore_op_name, meta_graph.saver_def.save_tensor_name.split(":")[0]} - {""}
    return _reachable([f for n in meta_graph.graph_def.node if n.name in names for f in _called(n)], functions)


def _served_functions(meta_graph, functions: dict) -> set[str]:
    """The functions reached from anything but the saver: the graph's other nodes (the
    signatures among them) and every function the object graph lets a loader call."""
    saver = {meta_graph.saver_def.restore_op_name, meta_graph.saver_def.save_tensor_name.split(":")[0]} - {""}
    todo = [f for n in meta_graph.graph_def.node if n.name not in saver for f in _called(n)]
    todo += list(meta_graph.object_graph_def.concrete_functions)
    return _reachable(todo, functions)


def _reachable(todo: list[str], functions: dict) -> set[str]:
    reached: set[str] = set()
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
