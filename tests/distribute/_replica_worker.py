"""Trains a few steps of a method on one or several devices and saves every replica's copy of every variable.

Run as a subprocess by the tests in this folder (device counts must be set before the backend initialises):

    python tests/distribute/_replica_worker.py --strategy mirrored --method tsb,dkel --out /tmp/m.npz

`--strategy`: `none` (one device), `mirrored` (TensorFlow, 2 logical CPU devices), `multi_worker` (TensorFlow,
TF_CONFIG set by the caller, one CPU per worker), `jax_data_parallel` (JAX, 2 host devices). The global batch is the
same in every case, so the runs are comparable.
"""

import argparse
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--strategy", default="none")
parser.add_argument("--method", default="tsb")
parser.add_argument("--out", required=True)
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--devices", type=int, default=2)
args = parser.parse_args()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if args.strategy in ("mirrored", "multi_worker", "none") and os.environ.get("KERAS_BACKEND") == "tensorflow":
    import tensorflow as tf

    if args.strategy != "multi_worker":  # the single-device run splits the CPU the same way, and uses one of them
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.devices)
if args.strategy == "jax_data_parallel":
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_okd  # noqa: E402
from keras_okd import distribute  # noqa: E402

SAMPLES, BATCH, CLASSES = 64, 16, 10


def student(name):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, synchronized=keras.backend.backend() == "tensorflow")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(x), name=name)


def build(method):
    keras.utils.set_random_seed(0)
    if method == "tsb":
        return keras_okd.methods.tsb([student("a"), student("b")], num_train_samples=SAMPLES, warmup_epochs=0)
    network = keras_okd.models.multi_branch(
        "simple_cnn", 3, num_classes=CLASSES, input_shape=(8, 8, 1), width=4,
        synchronized_bn=keras.backend.backend() == "tensorflow",
    )
    return keras_okd.methods.dkel(network, teacher_eta=0.3, init_steps=1)


def main():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, 8, 8, 1)).astype("float32")
    y = rng.integers(0, CLASSES, SAMPLES).astype("int32")
    out = {}
    for method in args.method.split(","):
        out.update(train(method, x, y))
    np.savez(args.out, **out)
    print("saved", len(out), "arrays", file=sys.stderr)


def train(method, x, y):
    with distribute.strategy_scope(args.strategy):
        distiller = build(method)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        data = tf.data.Dataset.from_tensor_slices(({"inputs": x, "index": np.arange(SAMPLES)}, y)).batch(BATCH)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        data = data.with_options(options)
        history = distiller.fit(data, epochs=args.epochs, verbose=0, shuffle=False)
    else:
        history = distiller.fit({"inputs": x, "index": np.arange(SAMPLES)}, y, batch_size=BATCH,
                                epochs=args.epochs, verbose=0, shuffle=False)
    out = {f"{method}|loss": np.asarray(history.history["loss"], "float64")}
    for i, variable in enumerate(distiller.variables):
        for r, copy in enumerate(distribute.replica_values(variable)):
            out[f"{method}|{i:04d}|{variable.path}|{r}"] = copy
    return out


if __name__ == "__main__":
    main()
