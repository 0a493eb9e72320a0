"""Shared test helpers. Tests run under whatever KERAS_BACKEND the process was started with (CI runs all three)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()


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
