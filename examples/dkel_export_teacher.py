"""DKEL on a three-branch student with per-branch views, then export of the deployed mean teacher.

    python examples/dkel_export_teacher.py --smoke --out /tmp/dkel_example

DKEL trains one network with a shared trunk and three branches, each branch seeing its own augmented view made inside
the training step, and deploys the mean teacher (an EMA of the student). `peer_model(i)` is trunk + branch i of the
teacher as a plain Keras model; `ensemble_model()` averages the teacher's branches.
"""

import argparse
import os
import tempfile

import keras

import keras_okd


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true", help="a tiny run (for CI)")
    args = parser.parse_args(argv)
    (x, y), (x_val, y_val) = keras_okd.data.digits_arrays()
    if args.smoke:
        x, y, args.epochs = x[:128], y[:128], 1

    keras.utils.set_random_seed(0)
    student = keras_okd.models.multi_branch("simple_cnn", num_branches=3, num_classes=10, input_shape=(8, 8, 1),
                                            per_branch_inputs=True)
    distiller = keras_okd.methods.dkel(student, views=keras_okd.data.peer_views(8, 8, padding=1, flip=False))
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True), coupled_weight_decay=5e-4)
    distiller.fit(x, y, validation_data=(x_val, y_val), epochs=args.epochs, batch_size=64, verbose=2)

    out = args.out or tempfile.mkdtemp(prefix="dkel_example_")
    os.makedirs(out, exist_ok=True)
    distiller.peer_model(0).save(os.path.join(out, "teacher_branch0.keras"))      # trunk + branch 0, plain Keras
    distiller.ensemble_model().save(os.path.join(out, "teacher_ensemble.keras"))
    deployed = keras.models.load_model(os.path.join(out, "teacher_branch0.keras"))
    accuracy = float((deployed.predict(x_val, verbose=0).argmax(-1) == y_val).mean())
    print(f"saved to {out}; teacher branch 0 validation accuracy {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
