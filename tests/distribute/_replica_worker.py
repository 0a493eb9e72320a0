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
if args.strategy == "jax_data_parallel" and "KERAS_DISTRIBUTION_NUM_PROCESSES" not in os.environ:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_okd  # noqa: E402
from keras_okd import distribute  # noqa: E402

SAMPLES, BATCH, CLASSES = int(os.environ.get("SAMPLES", 64)), 16, 10


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
    # Everything inside the scope: a JAX distribution only applies to the calls made under it (a tf.distribute
    # strategy is remembered by the model, but staying inside is harmless).
    with distribute.strategy_scope(args.strategy):
        distiller = build(method)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        inputs = {"inputs": x, "index": np.arange(len(x))}
        if keras.backend.backend() == "tensorflow" or "KERAS_DISTRIBUTION_NUM_PROCESSES" in os.environ:
            import tensorflow as tf  # several processes: each reads its share of a tf.data dataset

            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
            data = tf.data.Dataset.from_tensor_slices((inputs, y)).with_options(options)
            # JAX processes need full training batches (keras_okd.backend.process_inputs); evaluation does not.
            full = "KERAS_DISTRIBUTION_NUM_PROCESSES" in os.environ
            history = distiller.fit(data.batch(BATCH, drop_remainder=full), epochs=args.epochs, verbose=0,
                                    shuffle=False)
            evaluation = distiller.evaluate(data.batch(BATCH), verbose=0, return_dict=True)
            if "KERAS_DISTRIBUTION_NUM_PROCESSES" in os.environ:  # Keras's JAX predict cannot fetch global arrays
                predictions = None
            else:
                images = tf.data.Dataset.from_tensor_slices(x).batch(BATCH).with_options(options)
                predictions = distiller.predict(images, verbose=0)
        else:
            history = distiller.fit(inputs, y, batch_size=BATCH, epochs=args.epochs, verbose=0, shuffle=False)
            evaluation = distiller.evaluate(inputs, y, batch_size=BATCH, verbose=0, return_dict=True)
            predictions = distiller.predict(x, batch_size=BATCH, verbose=0)
    out = {
        f"{method}|loss": np.asarray(history.history["loss"], "float64"),
        f"{method}|evaluate": np.asarray([evaluation["loss"], evaluation["ensemble_accuracy"]], "float64"),
    }
    if predictions is not None:
        out[f"{method}|predict"] = np.asarray(predictions)
    teacher = {id(v) for t in distiller.teachers for v in t.variables}  # same paths as the students': mark them
    for i, variable in enumerate(distiller.variables):
        name = ("teacher:" if id(variable) in teacher else "") + variable.path
        for r, copy in enumerate(distribute.replica_values(variable)):
            out[f"{method}|{i:04d}|{name}|{r}"] = copy
    return out


if __name__ == "__main__":
    main()
