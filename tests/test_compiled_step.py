"""Every preset's training step compiles: jax.jit under Keras's default `jit_compile="auto"` on JAX, and XLA on
TensorFlow when `jit_compile=True` is asked for. (PyTorch's default step is eager; nothing to check there.)"""

import keras
import numpy as np
import pytest
from conftest import BACKEND, tiny_student

import keras_okd

(X_ALL, Y_ALL), _ = keras_okd.data.digits_arrays()
X, Y = X_ALL[:64], Y_ALL[:64]
INDEXED = {"inputs": X, "index": np.arange(len(X))}


def branches(per_branch_inputs):
    return keras_okd.models.multi_branch(
        "simple_cnn", 3, num_classes=10, input_shape=(8, 8, 1), per_branch_inputs=per_branch_inputs, width=4
    )


def views():
    return keras_okd.data.peer_views(8, 8, padding=1)


def flatten_layers(students):
    """Each tiny student's flattened features, by its own (automatic) layer name."""
    return [[next(layer.name for layer in s.layers if isinstance(layer, keras.layers.Flatten))] for s in students]


def mcl():
    pair = [tiny_student(name=f"s{i}") for i in range(2)]
    return keras_okd.methods.mcl(pair, num_train_samples=len(X), layers=flatten_layers(pair), num_negatives=16,
                                 embedding_dim=8)


def lmcl():
    pair = [tiny_student(name=f"s{i}") for i in range(2)]
    layers = [[next(layer.name for layer in s.layers if isinstance(layer, kind))
               for kind in (keras.layers.ReLU, keras.layers.Flatten)] for s in pair]
    return keras_okd.methods.lmcl(pair, num_train_samples=len(X), layers=layers, num_negatives=16, embedding_dim=8)


PRESETS = {
    "independent": lambda: keras_okd.methods.independent([tiny_student(name=f"s{i}") for i in range(2)]),
    "dml": lambda: keras_okd.methods.dml([tiny_student(name=f"s{i}") for i in range(2)]),
    "tsb": lambda: keras_okd.methods.tsb([tiny_student(name=f"s{i}") for i in range(2)], num_train_samples=len(X)),
    "kdcl": lambda: keras_okd.methods.kdcl([tiny_student(name=f"s{i}") for i in range(3)], views=views()),
    "one": lambda: keras_okd.methods.one(branches(False)),
    "pcl": lambda: keras_okd.methods.pcl(branches(True), views=views()),
    "dkel": lambda: keras_okd.methods.dkel(branches(True), views=views(), init_steps=0),  # init: its own model
    "cl": lambda: keras_okd.methods.cl(branches(False)),
    "okddip": lambda: keras_okd.methods.okddip(branches(False)),
    "kd": lambda: keras_okd.methods.kd([tiny_student(name=f"s{i}") for i in range(2)], teacher=tiny_student(name="t")),
    "mcl": mcl,
    "lmcl": lmcl,
    "switokd": lambda: keras_okd.methods.switokd([tiny_student(name=f"s{i}") for i in range(2)]),
}


def test_every_preset_is_listed():
    assert sorted(PRESETS) == keras_okd.methods.names()


@pytest.mark.heavy("jax")
@pytest.mark.skipif(BACKEND == "torch", reason="the torch step is eager unless jit_compile=True (torch.compile)")
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_training_step_compiles(name):
    distiller = PRESETS[name]()
    # TensorFlow resolves "auto" to no XLA on a CPU; ask for it there. JAX resolves "auto" to jax.jit unless a layer
    # reports supports_jit=False (core RandomTranslation does): the default must stay compiled.
    jit_compile = True if BACKEND == "tensorflow" else "auto"
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=jit_compile)
    assert distiller.jit_compile is True
    inputs = INDEXED if any(part.needs_index for part in distiller.knowledge) else X
    history = distiller.fit(inputs, Y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    assert distiller.jit_compile is True
    assert np.isfinite(history.history["loss"][-1])
