"""Bad model artifacts: corrupt, hostile or misbehaving. Each is written to a file or folder
that the model store can publish as a normal version.

    python -m faults.bad_models nan-model <folder>   # builds the NaN SavedModel (needs TensorFlow)
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from infra import paths

CACHE = paths.RUN / "faults" / "models"


def corrupt_pmml(out: Path) -> Path:
    out.write_bytes(random.Random(3).randbytes(4000))
    return out


def not_pmml(out: Path) -> Path:
    out.write_text('<?xml version="1.0"?>\n<html><body>not a model</body></html>')
    return out


def xxe_pmml(original: Path, secret: Path, decoy_url: str, out: Path) -> Path:
    """A working PMML document that also declares external entities: a local file and a URL."""
    text = original.read_text()
    body = text[text.index("<PMML"):].replace(
        "</Header>", "<Annotation>&secret;&remote;</Annotation></Header>", 1)
    out.write_text(
        '<?xml version="1.0"?>\n'
        f'<!DOCTYPE PMML [<!ENTITY secret SYSTEM "file://{secret}">'
        f'<!ENTITY remote SYSTEM "{decoy_url}/xxe">]>\n{body}')
    return out


def drifted_verification(original: Path, out: Path, by: float = 0.01) -> Path:
    """The same model whose <ModelVerification> expects other outputs for its first sample:
    what a model that no longer scores as it did when it was exported looks like."""
    from lxml import etree

    tree = etree.parse(str(original))
    cell = next(e for e in tree.iter() if etree.QName(e).localname == "row")[-1]  # an output
    cell.text = repr(float(cell.text) + by)
    tree.write(str(out), xml_declaration=True, encoding="UTF-8")
    return out


def commented_pmml(original: Path, comment: str, out: Path) -> Path:
    """The same model with a comment: other bytes, another SHA-256 (or a larger size)."""
    text = original.read_text()
    out.write_text(text.replace("<PMML", f"<!-- {comment} -->\n<PMML", 1))
    return out


def garbage_targz(out: Path) -> Path:
    out.write_bytes(b"\x1f\x8b" + random.Random(4).randbytes(3000))
    return out


def broken_graph_targz(out: Path) -> Path:
    """A .tar.gz with a saved_model.pb that is not a SavedModel."""
    return _targz(out, {"saved_model/saved_model.pb": b"not a protobuf at all" * 20})


def no_graph_targz(out: Path) -> Path:
    return _targz(out, {"saved_model/readme.txt": b"no model here"})


def traversal_targz(out: Path, escape_name: str) -> Path:
    """Members that would land outside the extraction folder: `../` paths and a symlink."""
    with tarfile.open(out, "w:gz") as tar:
        _add(tar, f"../../../{escape_name}", b"escaped")
        link = tarfile.TarInfo("saved_model/variables")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(link)
        _add(tar, "saved_model/saved_model.pb", b"x")
    return out


def _targz(out: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        for name, data in files.items():
            _add(tar, name, data)
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def warm_up_throws(saved_model: Path, out: Path) -> Path:
    """A copy of the digits SavedModel whose shipped warm-up image does not decode."""
    shutil.copytree(saved_model, out, dirs_exist_ok=True)
    (out / "assets.extra").mkdir(exist_ok=True)
    (out / "assets.extra" / "warmup_inputs.json").write_text(json.dumps([{"image_b64": "bm90IGEganBlZw"}]))
    return out


def saver_calling(saved_model: Path, out: Path) -> Path:
    """A copy of a SavedModel whose serving function also calls the saver's own save function
    (whose SaveV2 writes wherever its prefix input says), as a hand-made graph could."""
    from tensorflow.core.protobuf import saved_model_pb2

    shutil.copytree(saved_model, out, dirs_exist_ok=True)
    graph = (out / "saved_model.pb").read_bytes()
    saver = next(f.signature.name for f in saved_model_pb2.SavedModel.FromString(graph).meta_graphs[0]
                 .graph_def.library.function if f.signature.name.startswith("__inference__traced_save"))
    (out / "saved_model.pb").write_bytes(with_nodes(graph, "__inference_serve", [("StatefulPartitionedCall", {"f": saver})]))
    return out


def with_nodes(saved_model_pb: bytes, function_prefix: str, nodes: list[tuple[str, dict]]) -> bytes:
    """The SavedModel with `nodes` (op, attributes) added to its first function whose name starts
    with `function_prefix`: how a hand-made graph would carry them (the check reads, never runs)."""
    from tensorflow.core.protobuf import saved_model_pb2

    model = saved_model_pb2.SavedModel.FromString(saved_model_pb)
    target = next(f for f in model.meta_graphs[0].graph_def.library.function
                  if f.signature.name.startswith(function_prefix))
    for i, (op, attrs) in enumerate(nodes):
        node = target.node_def.add(name=f"added_{i}", op=op)
        for key, func in attrs.items():
            node.attr[key].func.name = func
    return model.SerializeToString()


class _Payload:
    """Unpickling this creates `marker`: proof that something deserialised a message."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_payload(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


def nan_model() -> Path:
    """A SavedModel whose output is always NaN (built once, in a child process: TensorFlow)."""
    target = CACHE / "nan-model" / "saved_model"
    if not (target / "saved_model.pb").exists():
        subprocess.run([sys.executable, "-m", "faults.bad_models", "nan-model", str(target)],
                       cwd=paths.ROOT, check=True, timeout=600,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return target


def _build_nan_model(target: Path) -> None:
    import tensorflow as tf

    module = tf.Module()

    @tf.function(input_signature=[{"x": tf.TensorSpec([None], tf.float32, name="x")}])
    def serve(inputs):
        return {"y": inputs["x"] / 0.0 * 0.0}

    module.serve = serve
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tf.saved_model.save(module, str(partial), signatures={"serving_default": serve})
    partial.rename(target)


if __name__ == "__main__":
    if sys.argv[1:2] == ["nan-model"]:
        _build_nan_model(Path(sys.argv[2]))
    else:
        sys.exit(__doc__)
