"""The TensorFlow ops that Keras- and tf.Module-exported models use: the source of the graph
check's allow-list (`scoring/backends/graph_check.py`, ALLOWED_OPS).

    python -m samples.op_inventory            # prints the ops, one per line
    python -m samples.op_inventory --check    # exit 1 if ALLOWED_OPS lacks any of them

Builds small models of every common layer kind (dense, convolutions, pooling, normalisation,
embeddings, recurrent, attention, string and integer lookups, text vectorisation, hashing,
image pre-processing) and a tf.Module of plain tf.math, saves each as a SavedModel, and reads
the ops of its graph and function library. The checkpoint ops of the saver are left out:
the check allows them only in the saver's own functions.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scoring.backends.graph_check import ALLOWED_OPS, SAVER_OPS, ops_of


def _keras_models() -> dict[str, Callable]:
    import tensorflow as tf

    k = tf.keras
    L = k.layers

    def seq(shape, *layers, dtype="float32"):
        return lambda: k.Sequential([k.Input(shape, dtype=dtype), *layers])

    def texts(layer):
        layer.adapt(tf.constant(["the cat sat", "a dog ran far", "the end"]))
        return k.Sequential([k.Input((), dtype="string"), layer])

    return {
        "dense": seq((8,), L.Dense(16, "relu"), L.Dropout(0.1), L.BatchNormalization(), L.Dense(3, "softmax")),
        "activations": seq((8,), L.Dense(8, "gelu"), L.Dense(8, "elu"), L.Dense(8, "selu"), L.Dense(8, "tanh"),
                           L.Dense(8, "swish"), L.Dense(8, "softplus"), L.LeakyReLU(), L.PReLU(),
                           L.Dense(1, "sigmoid")),
        "conv2d": seq((16, 16, 3), L.Conv2D(4, 3, padding="same"), L.MaxPooling2D(2), L.DepthwiseConv2D(3),
                      L.SeparableConv2D(4, 3, padding="same"), L.Conv2DTranspose(2, 3), L.AveragePooling2D(2),
                      L.GlobalAveragePooling2D(), L.Dense(2)),
        "conv1d": seq((20, 4), L.Conv1D(4, 3), L.MaxPooling1D(2), L.GlobalMaxPooling1D(), L.Dense(1)),
        "embedding": seq((10,), L.Embedding(100, 8), L.GlobalAveragePooling1D(), L.Dense(1), dtype="int64"),
        "recurrent": seq((6, 4), L.LSTM(8, return_sequences=True), L.GRU(8, return_sequences=True),
                         L.Bidirectional(L.SimpleRNN(4)), L.Dense(1)),
        "attention": lambda: _attention(k, L),
        "layer-norm": seq((8,), L.LayerNormalization(), L.UnitNormalization(), L.Dense(2)),
        "normalization": lambda: _adapted(k, L.Normalization(), np.random.rand(20, 4).astype("float32")),
        "discretization": lambda: _adapted(k, L.Discretization(num_bins=4), np.random.rand(20, 4).astype("float32")),
        "string-lookup": lambda: _adapted(k, L.StringLookup(output_mode="one_hot"), np.array(["a", "b", "c"]),
                                          (), "string"),
        "integer-lookup": lambda: _adapted(k, L.IntegerLookup(), np.array([3, 5, 7], dtype="int64"), (), "int64"),
        "hashing": seq((), L.Hashing(16), L.CategoryEncoding(16, output_mode="multi_hot"), dtype="string"),
        "text-int": lambda: texts(L.TextVectorization(output_sequence_length=5)),
        "text-tf-idf": lambda: texts(L.TextVectorization(output_mode="tf_idf")),
        "text-multi-hot": lambda: texts(L.TextVectorization(output_mode="multi_hot", ngrams=2)),
        "image": seq((32, 32, 3), L.Resizing(16, 16), L.Rescaling(1 / 255), L.CenterCrop(8, 8), L.Flatten(),
                     L.Dense(2)),
    }


def _adapted(k, layer, data, shape=None, dtype="float32"):
    layer.adapt(data)
    return k.Sequential([k.Input(data.shape[1:] if shape is None else shape, dtype=dtype), layer])


def _attention(k, L):
    inputs = k.Input((5, 8))
    x = L.MultiHeadAttention(num_heads=2, key_dim=4)(inputs, inputs)
    return k.Model(inputs, L.Dense(1)(L.GlobalAveragePooling1D()(x)))


def _math_module(target: Path) -> None:
    import tensorflow as tf

    class Scorer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x):
            y = tf.math.cumsum(tf.math.exp(-tf.abs(x)), axis=1) + tf.math.log1p(tf.square(x))
            top = tf.math.top_k(y, k=2).values
            z = tf.clip_by_value(tf.math.pow(tf.nn.sigmoid(x), 2.0), 0.1, 0.9)
            return {"top": top, "z": tf.reduce_mean(z, axis=1), "arg": tf.argmin(x, axis=1),
                    "where": tf.where(x > 0, x, tf.zeros_like(x)), "sorted": tf.sort(x, axis=1)}

    module = Scorer()
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.serve})


def inventory() -> dict[str, set[str]]:
    """Each model kind's ops, saver ops left out."""

    found: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in _keras_models().items():
            target = Path(tmp) / name
            with contextlib.redirect_stdout(sys.stderr):  # Keras prints what it exported
                make().export(str(target))
            found[name] = ops_of((target / "saved_model.pb").read_bytes()) - SAVER_OPS
        _math_module(Path(tmp) / "math")
        found["tf.Module math"] = ops_of((Path(tmp) / "math" / "saved_model.pb").read_bytes()) - SAVER_OPS
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--check", action="store_true", help="fail if ALLOWED_OPS lacks an op these models use")
    args = p.parse_args(argv)
    found = inventory()
    every = set().union(*found.values())
    if args.check:
        missing = {name: sorted(ops - ALLOWED_OPS) for name, ops in found.items() if ops - ALLOWED_OPS}
        for name, ops in missing.items():
            print(f"{name}: {', '.join(ops)}")
        return 1 if missing else 0
    print("\n".join(sorted(every)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
