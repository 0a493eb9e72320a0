"""TSB on a tf.data pipeline: indexed, shuffled, augmented training batches; the students saved as plain Keras.

    python examples/tsb_tf_data.py --out /tmp/tsb_example
    python examples/tsb_tf_data.py --smoke

`keras_okd.data.with_index` attaches each sample's position before shuffling (the temporal accumulator needs it);
`keras_okd.data.pipeline` does index -> cache -> shuffle -> batch -> augment -> prefetch. Any Keras preprocessing layer
works as the augmentation.
"""

import argparse
import os
import tempfile

import keras
import tensorflow as tf

import keras_okd
from keras_okd.experiments.schedules import LinearWarmUp


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default=None, help="where to save the students (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (for CI)")
    args = parser.parse_args(argv)

    (x, y), (x_val, y_val) = keras_okd.data.digits_arrays()
    if args.smoke:
        x, y, args.epochs = x[:128], y[:128], 1
    augment = keras.layers.RandomTranslation(1 / 8, 1 / 8, fill_mode="constant")       # any Keras layer
    train = keras_okd.data.pipeline(tf.data.Dataset.from_tensor_slices((x, y)), batch_size=64, training=True,
                                    augment=augment, seed=0)                            # indexed for TSB
    val = keras_okd.data.pipeline(tf.data.Dataset.from_tensor_slices((x_val, y_val)), batch_size=256, training=False)

    keras.utils.set_random_seed(0)
    students = [keras_okd.models.get("simple_cnn", num_classes=10, input_shape=(8, 8, 1)),
                keras_okd.models.get("simple_cnn", num_classes=10, input_shape=(8, 8, 1), width=16)]
    distiller = keras_okd.methods.tsb(students, num_train_samples=len(x), warmup_epochs=2)
    rate = LinearWarmUp(0.05, warmup_steps=2 * -(-len(x) // 64))    # the rate ramps up over 2 epochs of batches
    distiller.compile(optimizer=keras.optimizers.SGD(rate, momentum=0.9), coupled_weight_decay=5e-4)
    history = distiller.fit(train, validation_data=val, epochs=args.epochs, verbose=2,
                            callbacks=keras_okd.callbacks.for_method(distiller))         # TSB's warm-up

    out = args.out or tempfile.mkdtemp(prefix="tsb_example_")
    os.makedirs(out, exist_ok=True)
    for i, student in enumerate(distiller.students):
        student.save(os.path.join(out, f"student_{i}.keras"))                            # plain Keras models
    distiller.ensemble_model().save(os.path.join(out, "ensemble.keras"))
    print(f"saved to {out}; final validation accuracies:",
          {k: round(v[-1], 4) for k, v in history.history.items() if k.startswith("val_") and "accuracy" in k})
    return out


if __name__ == "__main__":
    main()
