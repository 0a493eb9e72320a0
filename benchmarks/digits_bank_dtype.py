"""What a reduced-precision temporal-accumulator bank does to a digits TSB run's accuracy.

Trains TSB (2 x simple_cnn width 16, 8 epochs, warm-up 2, SGD 0.05 momentum 0.9, coupled weight decay 5e-4,
batch 64) on the bundled digits with a float32, float16 and bfloat16 bank, for seeds 0..--seeds-1, and prints the
final validation accuracy of the students' ensemble.

    KERAS_BACKEND=tensorflow python benchmarks/digits_bank_dtype.py --seeds 3
"""

import argparse

import keras
import numpy as np

import keras_okd


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    for dtype in ("float32", "float16", "bfloat16"):
        accuracies = []
        for seed in range(args.seeds):
            keras.utils.set_random_seed(seed)
            train, val, n = keras_okd.data.get("digits", batch_size=64, seed=0)
            students = [keras_okd.models.get("simple_cnn", num_classes=10, width=16) for _ in range(2)]
            distiller = keras_okd.methods.tsb(students, num_train_samples=n, warmup_epochs=2, bank_dtype=dtype)
            distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), coupled_weight_decay=5e-4)
            history = distiller.fit(train, validation_data=val, epochs=args.epochs, verbose=0)
            accuracies.append(history.history["val_ensemble_accuracy"][-1])
        print(f"{keras.backend.backend()} bank {dtype}: validation ensemble accuracy per seed "
              f"{[round(a, 4) for a in accuracies]}, mean {np.mean(accuracies):.4f}", flush=True)


if __name__ == "__main__":
    main()
