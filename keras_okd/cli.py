"""The `keras-okd` command.

`keras-okd train` with no arguments is the quick demo: TSB with two small CNN students on the bundled digits
(scikit-learn's 1,797 real 8x8 digits, no download), next to the same two students trained independently, with
Keras progress bars. It prints a table of validation accuracies and writes, into the run directory it names:

    student_0.keras, student_1.keras   the TSB students, plain Keras models
    ensemble.keras                     their probability-averaging ensemble, plain Keras
    history.csv, baseline_history.csv  per-epoch logs of both runs (keras.callbacks.CSVLogger)
    results.json, results.md           the table
"""

import argparse
import datetime
import json
import os
import sys
import time

METHODS = ("tsb", "dml", "independent")


def _parser():
    parser = argparse.ArgumentParser(prog="keras-okd", description="Online knowledge distillation for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train students together (default: the TSB digits demo)")
    train.add_argument("--method", choices=METHODS, default="tsb", help="online KD method (default: tsb)")
    train.add_argument("--students", type=int, default=2, help="number of students (default: 2)")
    train.add_argument("--model", default="simple_cnn", help="zoo name of the students (default: simple_cnn)")
    train.add_argument("--epochs", type=int, default=40, help="training epochs (default: 40)")
    train.add_argument("--warmup-epochs", type=int, default=5, help="TSB: epochs with KD weight 0 (default: 5)")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=0.05, help="initial SGD learning rate (default: 0.05)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--run-dir", default=None, help="output directory (default: runs/<method>-digits-<time>)")
    train.add_argument("--no-baseline", action="store_true", help="skip the independently trained baseline")
    train.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras fit verbosity")
    return parser


def main(argv=None):
    """Entry point of the `keras-okd` console script."""
    args = _parser().parse_args(argv)
    if args.command == "train":
        return train_digits(args)
    return 2  # pragma: no cover - argparse enforces the choices


def _lr_schedule(base_lr, epochs):
    """The papers' step schedule scaled to `epochs`: x0.1 at 5/8, 3/4 and 7/8 of training (TSB: 150/180/210 of 240)."""
    import keras

    milestones = [round(epochs * f) for f in (0.625, 0.75, 0.875)]

    def schedule(epoch, lr=None):
        return base_lr * 0.1 ** sum(epoch >= m for m in milestones)

    return keras.callbacks.LearningRateScheduler(schedule)


def _build(method, args, num_train_samples):
    import keras

    import keras_okd

    keras.utils.set_random_seed(args.seed)
    students = [
        keras_okd.models.get(args.model, num_classes=10, input_shape=(8, 8, 1))
        for i in range(args.students)
    ]
    if method == "tsb":
        distiller = keras_okd.methods.tsb(students, num_train_samples, warmup_epochs=args.warmup_epochs)
    elif method == "dml":
        distiller = keras_okd.methods.dml(students)
    else:
        distiller = keras_okd.methods.independent(students)
    distiller.compile(optimizer=keras.optimizers.SGD(args.lr, momentum=0.9, weight_decay=5e-4))
    return distiller


def _fit(method, args, run_dir, history_name):
    import keras

    import keras_okd

    train, val, n = keras_okd.data.digits(batch_size=args.batch_size, seed=args.seed)
    distiller = _build(method, args, n)
    print(f"\n== {method}: {args.students} x {args.model} on digits ({n} training images), {args.epochs} epochs")
    callbacks = [_lr_schedule(args.lr, args.epochs), keras.callbacks.CSVLogger(os.path.join(run_dir, history_name))]
    start = time.time()
    history = distiller.fit(train, validation_data=val, epochs=args.epochs, verbose=args.verbose,
                            callbacks=keras_okd.callbacks.for_method(distiller) + callbacks)
    seconds = time.time() - start
    final = {k: float(v[-1]) for k, v in history.history.items() if k.startswith("val_") and k.endswith("accuracy")}
    return distiller, final, seconds


def train_digits(args):
    """Train the chosen method (and the independent baseline) on the digits and write the run directory."""
    import keras

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = args.run_dir or os.path.join("runs", f"{args.method}-digits-{stamp}")
    os.makedirs(run_dir, exist_ok=True)

    distiller, results, seconds = _fit(args.method, args, run_dir, "history.csv")
    for i, student in enumerate(distiller.students):
        student.save(os.path.join(run_dir, f"student_{i}.keras"))
    distiller.ensemble_model().save(os.path.join(run_dir, "ensemble.keras"))
    baseline, base_seconds = None, 0.0
    if not args.no_baseline and args.method != "independent":
        _, baseline, base_seconds = _fit("independent", args, run_dir, "baseline_history.csv")

    rows = [f"student_{i}" for i in range(args.students)] + ["ensemble"]
    table = {
        row: {
            "independent": None if baseline is None else baseline[f"val_{row}_accuracy"],
            args.method: results[f"val_{row}_accuracy"],
        }
        for row in rows
    }
    summary = {
        "backend": keras.backend.backend(),
        "method": args.method,
        "model": args.model,
        "students": args.students,
        "epochs": args.epochs,
        "seed": args.seed,
        "seconds": {args.method: round(seconds, 1), "independent": round(base_seconds, 1)},
        "validation_accuracy": table,
    }
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    markdown = _markdown(table, args.method, baseline is not None)
    with open(os.path.join(run_dir, "results.md"), "w") as f:
        f.write(markdown + "\n")
    print(f"\nValidation accuracy (%) on the digits, backend {keras.backend.backend()}, seed {args.seed}:\n")
    print(markdown)
    print(f"\nWrote the students, the ensemble, histories and results to {run_dir}")
    return 0


def _markdown(table, method, with_baseline):
    columns = (["independent"] if with_baseline else []) + [method]
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for row, values in table.items():
        lines.append(f"| {row} | " + " | ".join(f"{100 * values[c]:.2f}" for c in columns) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
