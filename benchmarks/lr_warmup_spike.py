"""The demo's first steps with and without the learning-rate warm-up: the largest per-batch cross-entropy of any
student in the first epoch, and the training and test accuracies after each epoch.

    python benchmarks/lr_warmup_spike.py --dataset fashion_mnist --epochs 2 --warmups 0 2

Each arm is the demo's config (`keras-okd train --dataset ... --lr-warmup-epochs W`, method independent, so the
numbers are the students' own) trained by the experiment runner into a temporary folder. Keras logs running means
per batch; batch k's own value is recovered as `k * mean_k - (k - 1) * mean_(k-1)` (exact for equal batches, the
last batch of an epoch is shorter and is left out).
"""

import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def batch_values(means):
    """Per-batch values from Keras's running means `[mean_1, mean_2, ...]` of one epoch."""
    return [means[0]] + [(k + 1) * means[k] - k * means[k - 1] for k in range(1, len(means))]


def arm(dataset, train_size, epochs, warmup, lr, seed):
    import keras

    from keras_okd import cli
    from keras_okd.experiments import run_experiment

    argv = ["train", "--dataset", dataset, "--method", "independent", "--epochs", str(epochs), "--lr", str(lr),
            "--lr-warmup-epochs", str(warmup)]
    if train_size:
        argv += ["--train-size", str(train_size)]
    args = cli._parser().parse_args(argv)
    args.seed = seed
    config = cli._demo_config("independent", args)

    class Batches(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.first_epoch = {}

        def on_train_batch_end(self, batch, logs=None):
            if not self.first_epoch.get("done"):
                for key, value in (logs or {}).items():
                    if key.endswith("_ce"):
                        self.first_epoch.setdefault(key, []).append(float(value))

        def on_epoch_end(self, epoch, logs=None):
            self.first_epoch["done"] = True

    seen = Batches()
    with tempfile.TemporaryDirectory() as work:
        run_experiment(config, os.path.join(work, "run"), seed, callbacks=[seen], verbose=0)
        from keras_okd.experiments import read_history

        rows = read_history(os.path.join(work, "run", "history.csv"))
    spikes = {k: max(batch_values(v)[:-1]) for k, v in seen.first_epoch.items() if k != "done"}
    return spikes, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--train-size", type=int, default=None, help="default: the demo's (5,000 for fashion_mnist)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--warmups", type=float, nargs="+", default=[0.0, 2.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print("| lr warm-up (epochs) | max batch CE, epoch 1 | epoch | train acc (students) | test acc (students) |")
    print("|---:|---:|---:|---|---|")
    for warmup in args.warmups:
        spikes, rows = arm(args.dataset, args.train_size, args.epochs, warmup, args.lr, args.seed)
        for row in rows:
            train = " / ".join(f"{100 * row[k]:.2f}" for k in sorted(row) if k.startswith("student_")
                               and k.endswith("_accuracy"))
            test = " / ".join(f"{100 * row[k]:.2f}" for k in sorted(row) if k.startswith("val_student_")
                              and k.endswith("_accuracy"))
            spike = f"{max(spikes.values()):.2f}" if row["epoch"] == 0 else ""
            print(f"| {warmup:g} | {spike} | {row['epoch'] + 1} | {train} | {test} |", flush=True)


if __name__ == "__main__":
    main()
