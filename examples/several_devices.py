"""TSB on several devices: `tf.distribute.MirroredStrategy` (TensorFlow) or `keras.distribution.DataParallel` (JAX).

    KERAS_BACKEND=tensorflow python examples/several_devices.py --smoke
    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 python examples/several_devices.py --smoke

On a machine with several GPUs nothing else changes. Without them, the example splits the CPU into two logical
devices (TensorFlow) or expects `XLA_FLAGS` to (JAX), so that it runs anywhere. Build, compile and fit inside the
scope; the temporal accumulator's bank stays identical on every replica. The torch backend trains on one device.
"""

import argparse

import keras

import keras_okd


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="a tiny run (for CI)")
    args = parser.parse_args(argv)
    backend = keras.backend.backend()
    strategy = {"tensorflow": "mirrored", "jax": "jax_data_parallel"}.get(backend, "none")
    if backend == "tensorflow":  # two logical CPU devices when there is no GPU; must run before TensorFlow starts
        import tensorflow as tf

        cpus = tf.config.list_physical_devices("CPU")
        if not tf.config.list_physical_devices("GPU"):
            try:
                tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
            except RuntimeError:  # already initialised (another example ran first in this process)
                pass
    train, val, n = keras_okd.data.get("digits", batch_size=64, seed=0)
    if args.smoke:
        train, args.epochs = train.take(2), 1
    with keras_okd.distribute.strategy_scope(strategy):
        students = [keras_okd.models.get("simple_cnn", input_shape=(8, 8, 1),
                                         synchronized_bn=strategy == "mirrored") for _ in range(2)]
        distiller = keras_okd.methods.tsb(students, num_train_samples=n, warmup_epochs=1)
        distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        distiller.fit(train, validation_data=val, epochs=args.epochs, verbose=2)
        print(f"strategy {strategy!r}: {keras_okd.distribute.num_replicas()} replicas")
        return distiller.evaluate(val, verbose=0, return_dict=True)


if __name__ == "__main__":
    main()
