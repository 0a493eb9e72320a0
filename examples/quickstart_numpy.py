"""Quickstart: two students learn together from numpy arrays (scikit-learn's bundled digits, no download).

    python examples/quickstart_numpy.py                      # KERAS_BACKEND=tensorflow, jax or torch
    python examples/quickstart_numpy.py --epochs 1 --smoke   # a few seconds

Numpy arrays go straight to `fit`: their positions are the sample indices that TSB's temporal accumulator keys its
memory by, so nothing needs wrapping.
"""

import argparse

import keras

import keras_okd
from keras_okd.experiments.schedules import LinearWarmUp


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="a tiny run (for CI)")
    args = parser.parse_args(argv)

    (x, y), (x_val, y_val) = keras_okd.data.digits_arrays()        # (1437, 8, 8, 1) floats, integer labels
    if args.smoke:
        x, y = x[:128], y[:128]
    keras.utils.set_random_seed(0)
    students = [keras_okd.models.get("simple_cnn", num_classes=10, input_shape=(8, 8, 1)) for _ in range(2)]
    distiller = keras_okd.methods.tsb(students, num_train_samples=len(x), warmup_epochs=2)
    rate = LinearWarmUp(0.05, warmup_steps=2 * -(-len(x) // 64))    # the rate ramps up over 2 epochs of batches
    distiller.compile(optimizer=keras.optimizers.SGD(rate, momentum=0.9), coupled_weight_decay=5e-4)
    distiller.fit(x, y, validation_data=(x_val, y_val), epochs=args.epochs, batch_size=64, verbose=2)

    probabilities = distiller.predict(x_val, verbose=0)              # the students' ensemble
    accuracy = float((probabilities.argmax(-1) == y_val).mean())
    print(f"ensemble validation accuracy: {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
