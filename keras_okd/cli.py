"""The `keras-okd` command.

`keras-okd train` with no arguments is the quick demo: TSB with two small CNN students on the bundled digits
(scikit-learn's 1,797 real 8x8 digits, no download), next to the same two students trained independently, with
Keras progress bars. It prints a table of validation accuracies and writes, into the run directory it names:

    student_0.keras, student_1.keras   the TSB students, plain Keras models
    ensemble.keras                     their probability-averaging ensemble, plain Keras
    history.csv, baseline_history.csv  per-epoch logs of both runs (keras.callbacks.CSVLogger)
    results.json, results.md           the table

Experiments from YAML configs (schema: `keras_okd.experiments.config`; the papers' recipes are in `configs/`):

    keras-okd train --config FILE [--set key.sub=value ...] [--run-dir DIR] [--seed N] [--strategy NAME]
        trains every seed of the config (or only N) into DIR (default runs/<experiment>/<method>), one seed_<s>
        sub-directory per seed (DIR itself for a single seed given with --run-dir); rerunning the same command on an
        interrupted run resumes it, a completed run is skipped.
    keras-okd evaluate RUN_DIR...      re-scores the saved students and ensemble on the test split
    keras-okd report RUN_DIR... [--out DIR]
        the papers' table (Ind, Net 1, Net 2, ..., Ens, Avg) in Markdown and the per-student test loss/accuracy curves
"""

import argparse
import datetime
import json
import os
import sys
import time

METHODS = ("tsb", "dml", "independent")
# Options of the digits demo only, with their defaults.
_DEMO_DEFAULTS = {"method": "tsb", "students": 2, "model": "simple_cnn", "epochs": 40, "warmup_epochs": 5,
                  "batch_size": 64, "lr": 0.05, "no_baseline": False}


def _parser():
    parser = argparse.ArgumentParser(prog="keras-okd", description="Online knowledge distillation for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train students together (default: the TSB digits demo; --config: a YAML "
                                         "experiment)")
    train.add_argument("--config", default=None, metavar="FILE",
                       help="YAML experiment config (see configs/); without it, the quick digits demo runs")
    train.add_argument("--strategy", default=None, choices=("none", "mirrored", "multi_worker", "jax_data_parallel"),
                       help="with --config: multi-device training (the config key `strategy`; see keras_okd.distribute)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                       help="override a config value, e.g. --set method.params.beta=0.5 (repeatable; values are YAML)")
    demo = _DEMO_DEFAULTS
    train.add_argument("--method", choices=METHODS, default=demo["method"],
                       help="demo: online KD method (default: tsb)")
    train.add_argument("--students", type=int, default=demo["students"], help="demo: number of students (default: 2)")
    train.add_argument("--model", default=demo["model"], help="demo: zoo name of the students (default: simple_cnn)")
    train.add_argument("--epochs", type=int, default=demo["epochs"], help="demo: training epochs (default: 40)")
    train.add_argument("--warmup-epochs", type=int, default=demo["warmup_epochs"],
                       help="demo, TSB: epochs with KD weight 0 (default: 5)")
    train.add_argument("--batch-size", type=int, default=demo["batch_size"], help="demo: batch size (default: 64)")
    train.add_argument("--lr", type=float, default=demo["lr"], help="demo: initial SGD learning rate (default: 0.05)")
    train.add_argument("--seed", type=int, default=None,
                       help="random seed (demo default: 0; with --config: train only this seed)")
    train.add_argument("--run-dir", default=None,
                       help="output directory (demo default: runs/<method>-digits-<time>; with --config default: "
                            "runs/<experiment>/<method>, one seed_<s> sub-directory per seed)")
    train.add_argument("--no-baseline", action="store_true", help="demo: skip the independently trained baseline")
    train.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras fit verbosity")
    evaluate = sub.add_parser("evaluate", help="re-score the saved students and ensemble of runs on the test split")
    evaluate.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                          help="run directories (or directories holding them)")
    evaluate.add_argument("--batch-size", type=int, default=None, help="test batch size (default: the config's)")
    report = sub.add_parser("report", help="Markdown table and training curves of runs, in the papers' layout")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (or directories holding them)")
    report.add_argument("--out", default=None, metavar="DIR",
                        help="output directory (default: <common parent of the RUN_DIRs>/report)")
    return parser


def main(argv=None):
    """Entry point of the `keras-okd` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        if args.config is None:
            if args.overrides:
                parser.error("--set needs --config FILE.")
            if args.strategy:
                parser.error("--strategy needs --config FILE.")
            if args.seed is None:
                args.seed = 0
            return train_digits(args)
        changed = [f"--{name.replace('_', '-')}" for name, default in _DEMO_DEFAULTS.items()
                   if getattr(args, name) != default]
        if changed:
            parser.error(f"{', '.join(changed)} only apply to the digits demo; with --config use --set "
                         "(e.g. --set epochs=5 --set method.params.beta=0.5).")
        return _guarded(train_config, args)
    if args.command == "evaluate":
        return _guarded(evaluate_runs, args)
    if args.command == "report":
        return _guarded(report_runs, args)
    return 2  # pragma: no cover - argparse enforces the choices


def _guarded(command, args):
    """Run a command; config, missing-data and run-directory errors print their message (no traceback) and exit
    with status 2."""
    from keras_okd.data import DatasetNotFoundError
    from keras_okd.experiments import ConfigError
    from keras_okd.experiments.runner import RunDirectoryError

    try:
        return command(args)
    except (ConfigError, DatasetNotFoundError, RunDirectoryError) as error:
        print(f"keras-okd {args.command}: {error}", file=sys.stderr)
        return 2


def _strategy_before_validation(path, overrides):
    """The strategy a config asks for, read before validating it (validation builds Keras optimizers, which runs
    TensorFlow ops, and a multi-worker strategy must exist before the first one). Unreadable files give "none":
    `load_config` then reports them."""
    import yaml

    for item in reversed(overrides):
        if item.replace(" ", "").startswith("strategy="):
            return item.split("=", 1)[1].strip()
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return "none"
    return data.get("strategy", "none") if isinstance(data, dict) else "none"


def train_config(args):
    """`keras-okd train --config FILE`: train every seed of the config (resuming interrupted runs)."""
    from keras_okd import distribute, experiments

    overrides = list(args.overrides) + ([f"strategy={args.strategy}"] if args.strategy else [])
    strategy = _strategy_before_validation(args.config, overrides)
    if strategy in distribute.STRATEGIES:
        distribute.process(strategy)  # joins the other processes: before the first TensorFlow or JAX computation
    config = experiments.load_config(args.config, overrides)
    seeds = [args.seed] if args.seed is not None else config["seeds"]
    results = []
    for seed, run_dir in experiments.run_dirs(config, args.run_dir, seeds):
        result = experiments.run_experiment(config, run_dir, seed, verbose=args.verbose)
        results.append((run_dir, result))
        print(f"Wrote {run_dir}")
    print()
    print(_results_table(results))
    return 0


def _results_table(results):
    width = max(len(r.get("net_accuracy") or []) for _, r in results)
    header = ["seed"] + [f"Net {i + 1}" for i in range(width)] + ["Ens", "seconds", "run directory"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * (len(header) - 1) + "---|"]
    for run_dir, r in results:
        nets = list(r.get("net_accuracy") or []) + [None] * width
        cells = [str(r["seed"])] + [_percent(v) for v in nets[:width]] + [
            _percent(r.get("ensemble_accuracy")), f"{r['seconds']:.0f}", run_dir]
        lines.append("| " + " | ".join(cells) + " |")
    return "Test accuracy (%) after the last epoch:\n\n" + "\n".join(lines)


def _percent(value):
    return "–" if value is None else f"{100 * value:.2f}"


def evaluate_runs(args):
    """`keras-okd evaluate RUN_DIR...`: re-score the saved models of every run found."""
    from keras_okd.experiments import evaluate_run
    from keras_okd.experiments.report import find_runs

    runs = find_runs(args.run_dirs)
    if not runs:
        print(f"keras-okd evaluate: no run directories under {', '.join(args.run_dirs)}", file=sys.stderr)
        return 2
    lines = ["| run | model | accuracy (%) | loss |", "|---|---|---:|---:|"]
    for run_dir in runs:
        result = evaluate_run(run_dir, batch_size=args.batch_size)
        for name, score in result["scores"].items():
            if "accuracy" in score:
                note = f" ({score['from']})" if "from" in score else ""
                lines.append(f"| {run_dir} | {name}{note} | {100 * score['accuracy']:.2f} | {score['loss']:.4f} |")
            else:
                problem = f"{score['file']} does not load ({score['error'][:80]})"
                lines.append(f"| {run_dir} | {name}: {problem} | – | – |")
        print(f"Wrote {os.path.join(run_dir, 'evaluation.json')}")
    print("\n".join(lines))
    return 0


def report_runs(args):
    """`keras-okd report RUN_DIR... [--out DIR]`: Markdown table and curve PNGs."""
    from keras_okd.experiments import make_report

    report = make_report(args.run_dirs, args.out)
    print(report["table"])
    print(f"Wrote the table of {report['runs']} runs to {report['markdown']} (numbers in {report['json']})")
    for path in report["plots"]:
        print(f"Wrote curves {path}")
    return 0


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
    distiller.compile(optimizer=keras.optimizers.SGD(args.lr, momentum=0.9), coupled_weight_decay=5e-4)
    return distiller


def _fit(method, args, run_dir, history_name):
    import keras

    import keras_okd

    train, val, n = keras_okd.data.get("digits", batch_size=args.batch_size, seed=args.seed)
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
