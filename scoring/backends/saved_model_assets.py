"""Which tensors of a SavedModel are paths of its own assets, read off `saved_model.pb`.

`--allow-model-ops` may admit a file-reading op (a vocabulary read by
InitializeTableFromTextFileV2, say), but only for the model's own `assets/` files: a path the
graph names in a constant, or computes, could be any file the TaskManager may read. An asset
reaches the graph in one of three ways, and nothing else counts as one:

- TF2: a function's captured input bound, in the object graph, to an `asset` node
  (`SavedConcreteFunction.bound_inputs` are the function's last inputs);
- TF1: a tensor named in the meta graph's `asset_file_def`, which the loader feeds with the
  asset's path (TF2 exports one too, assigned to a variable whose reads the graph passes on);
- passed along: an input of a called function that every call site fills with an asset, and
  Identity-like nodes in between.
"""

from __future__ import annotations

# The input holding the path, of the file-reading ops that --allow-model-ops may admit.
PATH_INPUT = {
    "ReadFile": 0, "MatchingFiles": 0, "InitializeTableFromTextFile": 1, "InitializeTableFromTextFileV2": 1,
    "TextLineDataset": 0, "TFRecordDataset": 0, "TFRecordDatasetV2": 0, "FixedLengthRecordDataset": 0,
    "FixedLengthRecordDatasetV2": 0, "LoadAndRemapMatrix": 0, "CSVDataset": 0, "CSVDatasetV2": 0,
}
PASS_THROUGH = {"Identity", "Snapshot", "StopGradient"}
CALLS = {"PartitionedCall", "StatefulPartitionedCall"}
GRAPH = ""  # the scope name of the meta graph's own nodes; functions go by their names


class AssetPaths:
    """Answers "is this input of this node an asset path?" for one meta graph."""

    def __init__(self, meta_graph) -> None:
        graph = meta_graph.graph_def
        self.nodes = {GRAPH: {n.name: n for n in graph.node}}
        self.args: dict[str, list[str]] = {}
        for f in graph.library.function:
            self.nodes[f.signature.name] = {n.name: n for n in f.node_def}
            self.args[f.signature.name] = [a.name for a in f.signature.input_arg]
        self.fed = {t.tensor_info.name.split(":")[0] for t in meta_graph.asset_file_def}
        self.bound = self._bound(meta_graph.object_graph_def)
        self.loadable = set(meta_graph.object_graph_def.concrete_functions)
        self.asset_args: set[tuple[str, str]] = set()
        self._settle()

    def reads_assets_only(self, scope: str, node) -> bool:
        """False for a file-reading node whose path is not surely an asset."""
        index = PATH_INPUT.get(node.op)
        inputs = [i for i in node.input if not i.startswith("^")]
        return index is not None and index < len(inputs) and self.is_asset(scope, inputs[index])

    def is_asset(self, scope: str, tensor: str, seen: frozenset = frozenset()) -> bool:
        name = tensor.split(":")[0]
        if (scope, name) in seen:
            return False
        seen = seen | {(scope, name)}
        if scope != GRAPH and name in self.args.get(scope, ()):
            return (scope, name) in self.asset_args
        node = self.nodes.get(scope, {}).get(name)
        if node is None:
            return False
        if scope == GRAPH and name in self.fed:
            return True
        inputs = [i for i in node.input if not i.startswith("^")]
        if node.op in PASS_THROUGH and inputs:
            return self.is_asset(scope, inputs[0], seen)
        if node.op == "ReadVariableOp" and inputs:
            return self._variable_of_assets(scope, inputs[0].split(":")[0], seen)
        return False

    def _variable_of_assets(self, scope: str, variable: str, seen: frozenset) -> bool:
        """A variable (TF2's asset path holder) that every assignment fills with an asset."""
        assigned = [n for n in self.nodes[scope].values() if n.op == "AssignVariableOp"
                    and n.input and n.input[0].split(":")[0] == variable]
        return bool(assigned) and all(len(n.input) > 1 and self.is_asset(scope, n.input[1], seen) for n in assigned)

    def _bound(self, object_graph) -> dict[tuple[str, str], bool]:
        """The captured inputs of the object graph's functions: (function, input) -> an asset?"""
        bound = {}
        for name, function in object_graph.concrete_functions.items():
            args = self.args.get(name, [])
            captured = args[len(args) - len(function.bound_inputs):] if function.bound_inputs else []
            for arg, node_id in zip(captured, function.bound_inputs, strict=True):
                node = object_graph.nodes[node_id] if node_id < len(object_graph.nodes) else None
                bound[(name, arg)] = node is not None and node.HasField("asset")
        return bound

    def _settle(self) -> None:
        """The function inputs that are assets: bound to one where a loader calls the function
        (its other inputs are the caller's), and filled with one at every call site. Grows
        from nothing until it holds; there are no recursive functions to loop on."""
        sites: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for scope, nodes in self.nodes.items():
            for n in nodes.values():
                callee = n.attr["f"].func.name if n.op in CALLS and "f" in n.attr else ""
                inputs = [i for i in n.input if not i.startswith("^")]
                for arg, tensor in zip(self.args.get(callee, []), inputs, strict=False):
                    sites.setdefault((callee, arg), []).append((scope, tensor))
        while True:
            grown = {key for key in self._candidates(sites)
                     if all(self.is_asset(scope, tensor) for scope, tensor in sites.get(key, []))}
            if grown <= self.asset_args:
                return
            self.asset_args |= grown

    def _candidates(self, sites: dict):
        for name, args in self.args.items():
            for arg in args:
                key = (name, arg)
                if key in self.bound:
                    if self.bound[key]:
                        yield key
                elif name not in self.loadable and sites.get(key):
                    yield key
