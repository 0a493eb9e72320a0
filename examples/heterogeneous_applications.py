"""Two different networks as students, trained together: keras.applications' MobileNetV3Small beside your own CNN.

    python examples/heterogeneous_applications.py --smoke

Any `keras.Model` that maps the same inputs to logits over the same classes can be a student: build them without a
final softmax (`classifier_activation=None`) and without pretrained weights (`weights=None`; online distillation
trains from scratch). Here on random 32x32 RGB images so the example needs no download.
"""

import argparse

import keras
import numpy as np

import keras_okd


def students(num_classes, input_shape):
    own = keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(num_classes),  # logits: no softmax
    ], name="own_cnn")
    return [
        keras.applications.MobileNetV3Small(input_shape=input_shape, weights=None, classes=num_classes,
                                            classifier_activation=None, include_preprocessing=False),
        own,
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--smoke", action="store_true", help="a tiny run (for CI)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.samples = 1, 16

    rng = np.random.default_rng(0)
    x = rng.random((args.samples, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, args.samples)
    distiller = keras_okd.methods.tsb(students(10, (32, 32, 3)), num_train_samples=len(x), warmup_epochs=0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    history = distiller.fit(x, y, epochs=args.epochs, batch_size=8, verbose=2)
    print("peers:", [s.name for s in distiller.students], "last loss:", round(history.history["loss"][-1], 4))
    return history


if __name__ == "__main__":
    main()
