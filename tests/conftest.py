"""Shared test helpers. Tests run under whatever KERAS_BACKEND the process was started with (CI runs all three).

Heavy tests (whole trainings, compiled steps of every preset, subprocesses; marked `@pytest.mark.heavy`) run on one
backend each in the default suite, chosen by a stable hash of the test's id, so the three backends share them and the
suite fits CI's time on 2 cores; `@pytest.mark.heavy("jax")` pins a test to the backends named. Set
`KERAS_OKD_ALL_BACKENDS=1` to run every heavy test on every backend (`KERAS_OKD_ALL_BACKENDS=1 bash scripts/test.sh`).
Everything else (loss values against numpy, errors, state after faults) runs on every backend.
"""

import os
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()
BACKENDS = ("tensorflow", "jax", "torch")
ALL_BACKENDS = os.environ.get("KERAS_OKD_ALL_BACKENDS") == "1"


def heavy_backends(item):
    """The backends a heavy test runs on in the default suite: the marker's, else one by hash of its id."""
    marker = item.get_closest_marker("heavy")
    return tuple(marker.args) or (BACKENDS[zlib.crc32(item.nodeid.encode()) % len(BACKENDS)],)


def pytest_configure(config):
    config.addinivalue_line("markers", "heavy(*backends): a slow end-to-end test; runs on one backend (the named "
                                       "ones, else one by hash) unless KERAS_OKD_ALL_BACKENDS=1")


def pytest_collection_modifyitems(config, items):
    if ALL_BACKENDS:
        return
    for item in items:
        if item.get_closest_marker("heavy") is not None and BACKEND not in heavy_backends(item):
            item.add_marker(pytest.mark.skip(reason=f"heavy: runs on {'/'.join(heavy_backends(item))} in the "
                                                    "default suite (KERAS_OKD_ALL_BACKENDS=1 runs it here too)"))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


def tiny_student(num_classes=10, input_shape=(8, 8, 1), width=4, name=None):
    """A very small conv student (fast on every backend)."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(width, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name=name)


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def gradient(fn, x):
    """d sum(fn(x)) / dx for a numpy array x, on the current backend (test helper only)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        t = tf.Variable(x)
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(fn(t))
        return tape.gradient(y, t, unconnected_gradients=tf.UnconnectedGradients.ZERO).numpy()
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: fn(v).sum())(x))
    import torch

    t = torch.tensor(x, requires_grad=True)
    y = fn(t).sum()
    if not y.requires_grad:  # no path from x to the output at all
        return np.zeros_like(x)
    y.backward()
    return t.grad.numpy()


class Crash(keras.callbacks.Callback):
    """Raises RuntimeError("simulated crash") after batch `batch` of epoch `epoch` (for resume tests)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise RuntimeError("simulated crash")


def straight_and_resumed(run, backup_dir, epoch, batch):
    """`(straight, resumed)`: `run(callbacks)` once uninterrupted, then once crashed after batch `batch` of epoch
    `epoch` under `keras.callbacks.BackupAndRestore(backup_dir)`, then once more resumed from that backup."""
    import pytest

    straight = run([])
    with pytest.raises(RuntimeError, match="simulated crash"):
        run([keras.callbacks.BackupAndRestore(str(backup_dir)), Crash(epoch=epoch, batch=batch)])
    return straight, run([keras.callbacks.BackupAndRestore(str(backup_dir))])
