"""The `keras-okd` command.

`keras-okd train` with no arguments is the quick demo: TSB with two `simple_cnn_8` students on the 1,000
Fashion-MNIST images bundled with keras-okd (`fashion_mnist_1k`, no download), in the recipe of
configs/fashion_mnist_1k (150 epochs of SGD 0.01, 5 epochs of learning-rate warm-up then cosine, TSB's KD warm-up 10
epochs, validated every 10 epochs: the regime where the README's ledger table found TSB ahead of independent
training), next to the same two students trained independently, with Keras progress bars. The recipe's defaults
depend on the dataset (`_DEMO_RECIPES`): `--dataset digits` (scikit-learn's 1,797 real 8x8 digits, bundled too)
trains `simple_cnn` 40 epochs at SGD 0.05 with 2 epochs of warm-up and a step schedule, TSB's KD warm-up 5 epochs,
and so does every other dataset; each option given on the command line overrides its default. `--method NAME`
picks any registered method (`keras-okd methods` lists them; `--import FILE` adds a plugin's); a method that trains
one multi-branch student (ONE, PCL, DKEL, ...) gets `--students` branches of `--model`. `--dataset NAME` picks any
registered dataset (`keras_okd.data.names()`): `fashion_mnist` and `mnist`
train on a stratified subset of 5,000 images unless `--train-size N` says otherwise (`--data-dir DIR`: where their
files are). Each arm is trained by the experiment runner (`keras_okd.experiments.run_experiment`) into its own run
directory, so the demo's run directory (default `runs/<method>-<dataset>-<time>`) holds

    <method>/, independent/            two ordinary run directories (config.yaml, history.csv, results.json, the
                                       students and their ensemble as plain .keras files, tensorboard/): rerunning
                                       the command with --run-dir resumes an interrupted arm, `keras-okd
                                       evaluate RUN_DIR` re-scores them, `keras-okd report RUN_DIR` puts both
                                       in the papers' table
    results.json, results.md           the demo's table (student_i / ensemble x independent / method)

After the table it says what one run can show, without numbers: on the digits, that they are saturated and one seed
shows no gain or loss, with the commands of the Fashion-MNIST comparison; on `fashion_mnist_1k`, that one seed is one
sample of the regime whose 5-seed table is in the README, with the commands of that comparison
(configs/fashion_mnist_1k) and of more seeds of the demo; elsewhere, that one seed is one sample, with the commands
that train and report more seeds.

Experiments from YAML configs (schema: `keras_okd.experiments.config`; the papers' recipes are in `configs/`):

    keras-okd train --config FILE [--set key.sub=value ...] [--run-dir DIR] [--seed N] [--strategy NAME]
        trains every seed of the config (or only N) into DIR (default runs/<experiment>/<method>), one seed_<s>
        sub-directory per seed (DIR itself for a single seed given with --run-dir); rerunning the same command on an
        interrupted run resumes it, a completed run is skipped. A run is backed up once a minute of training
        (`--backup-every SECONDS`, 0: after every epoch; the demo too) and after its last epoch.
    keras-okd evaluate RUN_DIR... [--batch-size N] [--import-plugins]
        re-scores the saved students and ensemble on the test split
    keras-okd report RUN_DIR... [--out DIR] [--import-plugins]
        the papers' table (Ind, Net 1, Net 2, ..., Ens, Avg) in Markdown and the per-student test loss/accuracy curves

A config's `imports:` (and `--import`) are Python files or modules that are imported, so their code runs: train only
configs you trust. `evaluate` and `report` read a run directory without importing its plugins unless given
`--import-plugins` (evaluate needs them only for a dataset or model layers they register).
    keras-okd methods [--import FILE]  the registered methods, one line each (plugins' too)

Exit status: 0 done; 1 a failure while running (some runs could not be evaluated or reported, a full disk, a module
missing from the install); 2 a usage error (a bad option or config value, an unusable run directory, no runs where
named); 3 the dataset is not on this machine (the message says how to get it, with the option to pass); 130 Ctrl-C.
`keras-okd --version` prints the installed version.

Every name the CLI accepts comes from the registries (`keras_okd.methods`, `keras_okd.models`, `keras_okd.data`,
`keras_okd.distribute.STRATEGIES`): a method registered by a plugin is usable exactly like a built-in one.
"""

import argparse
import ast
import datetime
import importlib.util
import inspect
import json
import math
import os
import re
import shlex
import shutil
import sys

# Options of the demo only, with their command-line defaults; None for the dataset-dependent ones: the dataset's
# recipe (_DEMO_RECIPES) gives them.
_DEMO_DEFAULTS = {"method": "tsb", "dataset": "fashion_mnist_1k", "train_size": None, "data_dir": None, "students": 2,
                  "model": None, "epochs": None, "warmup_epochs": None, "batch_size": None, "lr": None,
                  "lr_warmup_epochs": None, "no_baseline": False, "imports": []}
#: The digits demo's recipe, and that of every dataset without its own: `model`, `epochs`, `warmup_epochs` (TSB's KD
#: warm-up, for methods that take one), `batch_size`, `lr` (SGD, momentum 0.9, coupled weight decay 5e-4),
#: `lr_warmup_epochs`, `train_size` (None: the loader's default), `schedule` ("step": the rate x0.1 at the fractions
#: `_DEMO_LR_STEPS` of training; "cosine": to 0 over the run) and `validation_freq` (its greatest common divisor with
#: the epochs is used, so that the last epoch is validated).
_STEP_RECIPE = {"model": "simple_cnn", "epochs": 40, "warmup_epochs": 5, "batch_size": 64, "lr": 0.05,
                "lr_warmup_epochs": 2.0, "train_size": None, "schedule": "step", "validation_freq": 1}
#: The demo's recipe per dataset (the first is the default dataset's). fashion_mnist_1k: configs/fashion_mnist_1k's,
#: the regime of the README's ledger table `ledger/n1000_plain`, where TSB ends ahead of independent training.
_DEMO_RECIPES = {
    "fashion_mnist_1k": {"model": "simple_cnn_8", "epochs": 150, "warmup_epochs": 10, "batch_size": 64, "lr": 0.01,
                         "lr_warmup_epochs": 5.0, "train_size": None, "schedule": "cosine", "validation_freq": 10},
    "digits": _STEP_RECIPE,
    "fashion_mnist": {**_STEP_RECIPE, "train_size": 5000},
    "mnist": {**_STEP_RECIPE, "train_size": 5000},
}
#: The step schedule's milestones: the rate is multiplied by 0.1 at these fractions of training (TSB: 150/180/210 of
#: 240).
_DEMO_LR_STEPS = (0.625, 0.75, 0.875)
#: `keras-okd train --backup-every`'s default: seconds of training between two backups of a run. Each backup is a
#: `save_weights` of every variable: for two small CNNs on 1,000 images, 74 ms against epochs of 0.57 s on idle cores
#: (13%, benchmarks/bench_backup.py), 0.47 s under load. Runs whose epochs take longer are backed up every epoch.
_BACKUP_EVERY = 60.0
# `keras_okd.distribute.STRATEGIES`, named here so that `train --help` and a wrong `--strategy` import no engine
# (tests/test_cli_startup.py checks that the two agree).
STRATEGY_NAMES = ("none", "mirrored", "multi_worker", "jax_data_parallel")


def _seconds(text):
    """argparse type of `--backup-every`: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: accepted: a finite number of seconds >= 0 (0: a backup after "
                                         "every epoch)")
    return value


def _recipe_default(name):
    """The demo's default of recipe key `name` per dataset, for --help (e.g. "150 on fashion_mnist_1k; 40 on digits and
    the others")."""
    def shown(value):
        return f"{value:g}" if isinstance(value, float) else str(value)

    fallback = _DEMO_RECIPES["digits"][name]
    groups = {}
    for dataset, recipe in _DEMO_RECIPES.items():
        if recipe[name] != fallback:
            groups.setdefault(recipe[name], []).append(dataset)
    text = [f"{shown(value)} on {', '.join(datasets)}" for value, datasets in groups.items()]
    if fallback is not None:
        text.append(f"{shown(fallback)} on digits and the others" if groups else shown(fallback))
    return "; ".join(text)


def _demo_recipe(args):
    """The demo's recipe for the parsed `args` (the keys of `_DEMO_RECIPES`' entries): each option given on the
    command line, else the dataset's default (a dataset without a recipe of its own takes the digits'); the validation
    frequency is the greatest common divisor of the recipe's and the epochs, so that the last epoch is validated."""
    recipe = dict(_DEMO_RECIPES.get(args.dataset, _DEMO_RECIPES["digits"]))
    for name in recipe:
        if getattr(args, name, None) is not None:
            recipe[name] = getattr(args, name)
    recipe["validation_freq"] = math.gcd(recipe["epochs"], recipe["validation_freq"])
    return recipe


#: Exit statuses (see the module docstring).
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NO_DATA, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("keras-okd")
    except PackageNotFoundError:  # run from a checkout that is not installed
        own = "(not installed)"
    try:
        keras = version("keras")
    except PackageNotFoundError:
        keras = "not installed"
    return f"keras-okd {own} (keras {keras})"


def _parser():
    # Nothing here imports Keras: `--help`, `methods` and argument errors answer before an engine loads.
    parser = argparse.ArgumentParser(
        prog="keras-okd", description="Online knowledge distillation for Keras 3.",
        epilog="exit status: 0 done, 1 a failure while running, 2 a usage error, 3 the dataset is not on this machine, "
               "130 Ctrl-C.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train", help="train students together (default: the TSB demo on the 1,000 Fashion-MNIST images bundled with "
                      "keras-okd; --config: a YAML experiment)",
        description="Without --config, the demo: the method and the same students trained independently, one seed; "
                    "the defaults of --model, --epochs, --warmup-epochs, --batch-size, --lr, --lr-warmup-epochs and "
                    "--train-size are the recipe of --dataset (fashion_mnist_1k: configs/fashion_mnist_1k's; digits "
                    "and every other dataset: the digits'), and an option given overrides its default. With "
                    "--config, a YAML experiment.")
    train.add_argument("--config", default=None, metavar="FILE",
                       help="YAML experiment config (see configs/); without it, the quick demo runs (default: on the "
                            "bundled fashion_mnist_1k). A config's `imports:` are Python files or modules that are "
                            "imported, so their code runs: train only configs you trust")
    train.add_argument("--strategy", default=None, choices=STRATEGY_NAMES, metavar="NAME",
                       help="with --config: multi-device training (the config key `strategy`, one of "
                            "keras_okd.distribute.STRATEGIES)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                       help="override a config value, e.g. --set method.params.beta=0.5 (repeatable; values are YAML)")
    demo = _DEMO_DEFAULTS
    train.add_argument("--method", default=demo["method"],
                       help="demo: a registered method (`keras-okd methods` lists them; default: tsb)")
    train.add_argument("--import", action="append", default=[], dest="imports", metavar="PLUGIN",
                       help="demo: import a plugin (.py file or module) that registers methods (repeatable)")
    train.add_argument("--dataset", default=demo["dataset"],
                       help="demo: a registered dataset (keras_okd.data.names()); default: fashion_mnist_1k, the "
                            "1,000 Fashion-MNIST images bundled with keras-okd; digits: scikit-learn's 8x8 digits, "
                            "bundled too")
    train.add_argument("--train-size", type=int, default=demo["train_size"], metavar="N",
                       help="demo, datasets with train_size (fashion_mnist, mnist): train on a stratified subset of "
                            f"N images (default: {_recipe_default('train_size')})")
    train.add_argument("--data-dir", default=demo["data_dir"], metavar="DIR",
                       help="demo, datasets with data_dir: the folder holding the dataset's files (default: the "
                            "loader's lookup, e.g. Debian's and Keras's folders for fashion_mnist)")
    train.add_argument("--students", type=int, default=demo["students"], help="demo: number of students (default: 2)")
    train.add_argument("--model", default=demo["model"],
                       help=f"demo: zoo name of the students (default: {_recipe_default('model')})")
    train.add_argument("--epochs", type=int, default=demo["epochs"],
                       help=f"demo: training epochs (default: {_recipe_default('epochs')})")
    train.add_argument("--warmup-epochs", type=int, default=demo["warmup_epochs"],
                       help="demo, methods with warmup_epochs (TSB): epochs with KD weight 0 (default: "
                            f"{_recipe_default('warmup_epochs')}); a warm-up as long as --epochs or longer leaves "
                            "the method's students trained exactly as independent ones, and fit says so")
    train.add_argument("--batch-size", type=int, default=demo["batch_size"],
                       help=f"demo: batch size (default: {_recipe_default('batch_size')})")
    train.add_argument("--lr", type=float, default=demo["lr"],
                       help=f"demo: initial SGD learning rate (default: {_recipe_default('lr')}), then the "
                            f"dataset's schedule ({_recipe_default('schedule')})")
    train.add_argument("--lr-warmup-epochs", type=float, default=demo["lr_warmup_epochs"], metavar="E",
                       help="demo: linear learning-rate warm-up over the first E epochs, per step (default: "
                            f"{_recipe_default('lr_warmup_epochs')}; 0: none), so that the first steps at the full "
                            "rate do not blow up (benchmarks/lr_warmup_spike.py)")
    train.add_argument("--seed", type=int, default=None,
                       help="random seed (demo default: 0; with --config: train only this seed)")
    train.add_argument("--run-dir", default=None,
                       help="output directory (demo default: runs/<method>-<dataset>-<time>, one run directory per "
                            "arm; with --config default: runs/<experiment>/<method>, one seed_<s> sub-directory per "
                            "seed)")
    train.add_argument("--no-baseline", action="store_true", help="demo: skip the independently trained baseline")
    train.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras fit verbosity")
    train.add_argument("--backup-every", type=_seconds, default=_BACKUP_EVERY, metavar="SECONDS",
                       help=f"back up the run after an epoch once this many seconds of training have passed since the "
                            f"last backup, and after the last epoch (default: {_BACKUP_EVERY:g}; 0: after every "
                            "epoch). A kill loses at most about that much training; the results do not depend on it")
    evaluate = sub.add_parser("evaluate", help="re-score the saved students and ensemble of runs on the test split")
    evaluate.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                          help="run directories (or directories holding them)")
    evaluate.add_argument("--batch-size", type=int, default=None, help="test batch size, >= 1 (default: the config's)")
    evaluate.add_argument("--import-plugins", action="store_true",
                          help="import the runs' plugins (their config's `imports:`; this runs their code), needed "
                               "only when a run's dataset or model layers come from them; default: not imported")
    report = sub.add_parser("report", help="Markdown table and training curves of runs, in the papers' layout")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (or directories holding them)")
    report.add_argument("--out", default=None, metavar="DIR",
                        help="output directory (default: <common parent of the RUN_DIRs>/report; another disk for "
                             "runs on a read-only one)")
    report.add_argument("--import-plugins", action="store_true",
                        help="import the runs' plugins (their config's `imports:`; this runs their code) and check "
                             "their configs in full; default: not imported (a report reads names and numbers)")
    ledger = sub.add_parser("ledger", help="the results ledger: record finished runs, print or refresh the tables "
                                           "generated from records, rerun a record (keras_okd.experiments.ledger)")
    what = ledger.add_subparsers(dest="ledger_command", required=True)
    add = what.add_parser("add", help="write the record of each finished run directory")
    add.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (or directories holding them)")
    add.add_argument("--ledger", default="ledger", metavar="DIR", help="the ledger folder (default: ledger)")
    add.add_argument("--tag", default=None, help="the regime's name (default: the run's tag, else its experiment)")
    add.add_argument("--commit", default=None,
                     help="the git commit of the code that trained the runs, for runs whose results.json does not "
                          "name it (default: this checkout's commit now)")
    show = what.add_parser("table", help="print the report's table of the records under PATHs")
    show.add_argument("paths", nargs="+", metavar="PATH", help="ledger folders or record files")
    readme = what.add_parser("readme", help="rewrite the README's <!-- ledger: PATH --> tables from the records")
    readme.add_argument("readme", metavar="README", help="the Markdown file (README.md)")
    readme.add_argument("--check", action="store_true", help="change nothing; exit 1 when a table differs")
    rerun = what.add_parser("rerun", help="train a record's config and seed again and compare the accuracies")
    rerun.add_argument("record", metavar="RECORD", help="a *.record.json file")
    rerun.add_argument("--tolerance", type=float, default=0.0, metavar="POINTS",
                       help="accepted difference of each accuracy, in points (default 0: identical, as measured "
                            "for a rerun on the same backend and machine; see the README)")
    rerun.add_argument("--run-dir", default=None, help="where to train (default: a temporary folder, removed)")
    methods = sub.add_parser("methods", help="list the registered methods (built-in, entry points and --import)")
    methods.add_argument("--import", action="append", default=[], dest="imports", metavar="PLUGIN",
                         help="import a plugin (.py file or module) first (repeatable)")
    return parser


def main(argv=None):
    """Entry point of the `keras-okd` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up lines (oneDNN, CPU features)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        if args.seed is not None and not 0 <= args.seed < 2**32:
            parser.error(f"--seed {args.seed}: accepted: an integer in [0, 2**32 - 1].")
        if args.config is None:
            if args.overrides:
                parser.error("--set needs --config FILE.")
            if args.strategy:
                parser.error("--strategy needs --config FILE.")
            _check_demo(parser, args)
            if args.seed is None:
                args.seed = 0
            return _guarded(train_demo, args)
        changed = [_flag(name) for name, default in _DEMO_DEFAULTS.items() if getattr(args, name) != default]
        if changed:
            parser.error(f"{', '.join(changed)} only apply to the demo (train without --config); with --config use "
                         "--set (e.g. --set epochs=5 --set method.params.beta=0.5; plugins: the config's `imports:`).")
        return _guarded(train_config, args)
    if args.command == "evaluate":
        if args.batch_size is not None and args.batch_size < 1:
            parser.error(f"--batch-size {args.batch_size}: accepted: an integer >= 1 (leave it out for the config's).")
        return _guarded(evaluate_runs, args)
    if args.command == "report":
        return _guarded(report_runs, args)
    if args.command == "methods":
        return _guarded(list_methods, args)
    if args.command == "ledger":
        return _guarded(ledger_command, args)
    return 2  # pragma: no cover - argparse enforces the choices


def _flag(name):
    return "--import" if name == "imports" else f"--{name.replace('_', '-')}"


def _check_demo(parser, args):
    """The demo's options, each with its accepted range (argparse exits with status 2); options not given take the
    dataset's recipe, which is in range."""
    ranges = [("--students", args.students, lambda v: v >= 2, "an integer >= 2"),
              ("--epochs", args.epochs, lambda v: v >= 1, "an integer >= 1"),
              ("--warmup-epochs", args.warmup_epochs, lambda v: v >= 0, "an integer >= 0"),
              ("--batch-size", args.batch_size, lambda v: v >= 1, "an integer >= 1"),
              ("--lr", args.lr, lambda v: v > 0 and v != float("inf"), "a finite number > 0"),
              ("--lr-warmup-epochs", args.lr_warmup_epochs, lambda v: 0 <= v < float("inf"), "a finite number >= 0")]
    for flag, value, ok, accepted in ranges:
        if value is not None and not ok(value):
            parser.error(f"{flag} {value}: accepted: {accepted}.")
    import keras_okd.data
    from keras_okd.models import names

    if args.model is not None and args.model not in names():
        parser.error(f"--model {args.model!r} is not a zoo name; known: {', '.join(names())}.")
    if args.dataset not in keras_okd.data.names():
        parser.error(f"--dataset {args.dataset!r} is not a registered dataset; known: "
                     f"{', '.join(keras_okd.data.names())}.")
    options = _loader_options(args.dataset)
    for flag, value, option in (("--train-size", args.train_size, "train_size"),
                                ("--data-dir", args.data_dir, "data_dir")):
        if value is not None and option not in options:
            parser.error(f"{flag}: dataset {args.dataset!r} has no {option} option (datasets with one: "
                         f"{', '.join(n for n in keras_okd.data.names() if option in _loader_options(n))}).")
    if args.train_size is not None and args.train_size < 1:
        parser.error(f"--train-size {args.train_size}: accepted: an integer >= 1.")
    problem = _load_plugins(args.imports)
    if problem:
        parser.error(problem)
    import keras_okd.methods
    from keras_okd.experiments.config import method_accepts

    try:
        preset = keras_okd.methods.get(args.method)
    except ValueError as error:
        parser.error(f"--method: {error}")
    if args.warmup_epochs is not None and not method_accepts(preset, "warmup_epochs"):
        parser.error(f"--warmup-epochs: method {args.method!r} has no warm-up (no warmup_epochs argument).")


def _loader_options(name):
    import keras_okd.data

    return inspect.signature(keras_okd.data.loader(name)).parameters


def _load_plugins(specs):
    """Import the `--import` plugins (paths relative to the current folder); an error message, or None."""
    from keras_okd.registry import PluginError, load_plugin

    for spec in specs:
        try:
            load_plugin(spec, base_dir=os.getcwd())
        except PluginError as error:
            return f"--import {spec}: {error}"
    return None


#: Exit status of a command stopped by its disk (full, over quota, read-only, no permission; see
#: keras_okd.experiments.state.DiskError): the message names the file and what is still safe.
DISK_EXIT = 1


class Interrupted(Exception):
    """Ctrl-C during a command; the message says how to resume."""


def _guarded(command, args):
    """Run a command. User errors (a config error, missing data, an unusable run directory, no runs to report)
    print their message without a traceback and exit with status 2 (usage) or 3 (missing data); a module missing from
    the install, with 1; Ctrl-C prints how to resume and exits with 130 (128 + SIGINT, the shell's convention). The
    error classes are imported once one is raised (they bring the engine), so a command that needs none (`methods`)
    loads none."""
    try:
        return command(args)
    except (KeyboardInterrupt, Interrupted) as error:
        print(f"\nkeras-okd {args.command}: interrupted. {error or ''}".rstrip(), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        from keras_okd.data import DatasetNotFoundError
        from keras_okd.experiments import ConfigError
        from keras_okd.experiments.report import NoRunsError, OutDirectoryError
        from keras_okd.experiments.runner import RunDirectoryError

        if isinstance(error, DatasetNotFoundError):
            print(f"keras-okd {args.command}: {error.spelled(_cli_spelling(args))}", file=sys.stderr)
            return EXIT_NO_DATA
        if isinstance(error, (ConfigError, RunDirectoryError, NoRunsError, OutDirectoryError)):
            print(f"keras-okd {args.command}: {error}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(error, ModuleNotFoundError):  # a broken install: the message names the module
            print(f"keras-okd {args.command}: {error}", file=sys.stderr)
            return EXIT_FAILURE
        raise


#: The demo's flags for dataset loader options.
_DEMO_DATASET_FLAGS = {"data_dir": "--data-dir", "train_size": "--train-size"}


def _cli_spelling(args):
    """How this command takes a dataset loader option that an error message advises (`DatasetNotFoundError.spelled`):
    `--set dataset.NAME=VALUE` with --config, the demo's flag (`--data-dir DIR`), else the config key."""
    def spell(name, value):
        value = value if value.startswith("<") else shlex.quote(value)
        if args.command == "train" and args.config is not None:
            return f"`--set dataset.{name}={value}`"
        if args.command == "train" and name in _DEMO_DATASET_FLAGS:
            return f"`{_DEMO_DATASET_FLAGS[name]} {value}`"
        where = "a --config file" if args.command == "train" else "the run's config.yaml"
        return f"`dataset.{name}: {value}` in {where}"

    return spell


def _strategy_before_validation(path, overrides):
    """The strategy a config asks for, read before validating it (validation builds Keras optimizers, which runs
    TensorFlow ops, and a multi-worker strategy must exist before the first one). Unreadable files give "none":
    `load_config` then reports them."""
    from keras_okd.experiments.config import ConfigError, read_yaml

    for item in reversed(overrides):
        if item.replace(" ", "").startswith("strategy="):
            return item.split("=", 1)[1].strip()
    try:
        data, _ = read_yaml(path)  # bounded like load_config's own read: a hostile file is refused there
    except ConfigError:
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
        result = _train_run(config, run_dir, seed, args.verbose, [d for d, _ in results],
                            backup_every=args.backup_every)
        if result is None:
            return DISK_EXIT
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

    from keras_okd.experiments import ConfigError

    runs = find_runs(args.run_dirs)
    if not runs:
        print(f"keras-okd evaluate: no run directories under {', '.join(args.run_dirs)}", file=sys.stderr)
        return 2
    lines = ["| run | model | accuracy (%) | loss |", "|---|---|---:|---:|"]
    problems = []
    for run_dir in runs:
        try:
            result = evaluate_run(run_dir, batch_size=args.batch_size, import_plugins=args.import_plugins)
        except ConfigError as error:  # this run's config.yaml: say so, evaluate the others
            problems.append(f"{run_dir}: not evaluated: {error}")
            continue
        for name, score in result["scores"].items():
            if "accuracy" in score:
                note = f" ({score['from']})" if "from" in score else ""
                lines.append(f"| {run_dir} | {name}{note} | {100 * score['accuracy']:.2f} | {score['loss']:.4f} |")
            else:
                lines.append(f"| {run_dir} | {name}: {score['file']} {score['error'][:120]} | – | – |")
        problems += result["problems"]
        if result.get("saved"):
            print(f"Wrote {result['saved']}")
    print("\n".join(lines))
    for problem in problems:
        print(f"keras-okd evaluate: {problem}", file=sys.stderr)
    return 1 if problems else 0


def report_runs(args):
    """`keras-okd report RUN_DIR... [--out DIR]`: Markdown table and curve PNGs."""
    from keras_okd.experiments import make_report

    report = make_report(args.run_dirs, args.out, import_plugins=args.import_plugins)
    print(report["table"])
    if report["markdown"]:
        print(f"Wrote the table of {report['runs']} runs to {report['markdown']} (numbers in {report['json']})")
    for path in report["plots"]:
        print(f"Wrote curves {path}")
    for problem in report["problems"]:
        print(f"keras-okd report: {problem}", file=sys.stderr)
    return 1 if report["problems"] else 0


def ledger_command(args):
    """`keras-okd ledger add|table|readme|rerun ...` (see `keras_okd.experiments.ledger`)."""
    from keras_okd.experiments import ledger, readme_tables
    from keras_okd.experiments.report import find_runs

    try:
        if args.ledger_command == "add":
            runs = find_runs(args.run_dirs)
            done = [r for r in runs if os.path.exists(os.path.join(r, "results.json"))]
            for run in done:
                print(f"recorded {run} -> {ledger.record_run_dir(run, args.ledger, args.tag, args.commit)}")
            skipped = sorted(set(runs) - set(done))
            for run in skipped:
                print(f"keras-okd ledger: {run} has not finished (no results.json); not recorded", file=sys.stderr)
            return 1 if skipped or not done else 0
        if args.ledger_command == "table":
            print(readme_tables.table(args.paths))
            return 0
        if args.ledger_command == "readme":
            with open(args.readme) as f:
                blocks = readme_tables.readme_blocks(f.read(), os.path.dirname(os.path.abspath(args.readme)))
            stale = [paths for paths, body, generated in blocks if body != generated]
            if args.check:
                for paths in stale:
                    print(f"{args.readme}: the table of <!-- ledger: {paths} --> differs from its records",
                          file=sys.stderr)
                return 1 if stale else 0
            readme_tables.update_readme(args.readme)
            print(f"{args.readme}: {len(blocks)} ledger tables, {len(stale)} rewritten")
            return 0
        return _rerun_record(args, ledger)
    except (ledger.LedgerError, OSError) as error:
        print(f"keras-okd ledger {args.ledger_command}: {error}", file=sys.stderr)
        return 2


def _rerun_record(args, ledger):
    """`keras-okd ledger rerun RECORD`: train the record's config and seed with `run_experiment` (records written
    by `keras-okd train`; benchmarks/fashion_mnist_gpu.py reruns its own records with --rerun), then compare."""
    import tempfile

    import keras

    from keras_okd.experiments import config_from_dict, read_history, run_experiment

    record = ledger.read_record(args.record)
    if record.get("produced_by", "keras-okd train") != "keras-okd train":
        print(f"keras-okd ledger rerun: {args.record} was produced by {record['produced_by']}, whose data pipeline "
              f"differs from keras-okd train's: rerun it with `python {record['produced_by']} --rerun "
              f"{args.record}`.", file=sys.stderr)
        return 2
    if record["backend"] != keras.backend.backend():
        print(f"keras-okd ledger rerun: {args.record} ran on KERAS_BACKEND={record['backend']}; this process runs "
              f"{keras.backend.backend()}. Set KERAS_BACKEND={record['backend']}.", file=sys.stderr)
        return 2
    config = config_from_dict(record["config"], source=args.record)
    work = args.run_dir or tempfile.mkdtemp(prefix="keras-okd-rerun-")
    try:
        results = run_experiment(config, work, record["seed"], verbose=0)
        again = ledger.make_record(config, results, read_history(os.path.join(work, "history.csv")),
                                   tag=record["tag"])
    finally:
        if args.run_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    ok, lines = ledger.compare(record, again, args.tolerance)
    print("\n".join(lines))
    print(f"{'reproduced' if ok else 'NOT reproduced'} within {args.tolerance} points")
    return 0 if ok else 1


def list_methods(args):
    """`keras-okd methods [--import PLUGIN]`: every registered method with the first line of its docstring.

    Without plugins (no `--import`, no installed entry point) the built-in presets are read from their files, so no
    engine is imported; a plugin is imported, and then so is every preset."""
    from importlib.metadata import entry_points

    from keras_okd.registry import ENTRY_POINT_GROUP

    if not args.imports and not entry_points(group=ENTRY_POINT_GROUP):
        presets = builtin_presets()
        width = max(len(name) for name in presets)
        for name, doc in sorted(presets.items()):
            print(f"{name:<{width}}  {_summary(doc)}")
        return 0
    import keras_okd.methods
    from keras_okd.registry import load_entry_points

    problem = _load_plugins(args.imports)
    if problem:
        print(f"keras-okd methods: {problem}", file=sys.stderr)
        return 2
    load_entry_points()
    names = keras_okd.methods.names()
    width = max(len(name) for name in names)
    for name in names:
        preset = keras_okd.methods.get(name)
        print(f"{name:<{width}}  {_summary(preset.__doc__)}{_origin(preset)}")
    return 0


def builtin_presets():
    """`{name: docstring}` of the built-in presets, read from the files of `keras_okd.methods` without importing them:
    each public module's functions decorated with `@register("name")` (how the package registers them on import).

    Example:

    >>> sorted(builtin_presets())[:3]
    ['cl', 'dkel', 'dml']
    """
    folder = importlib.util.find_spec("keras_okd.methods").submodule_search_locations[0]
    presets = {}
    for file in sorted(os.listdir(folder)):
        if not file.endswith(".py") or file.startswith("_"):
            continue
        with open(os.path.join(folder, file)) as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            for decorator in getattr(node, "decorator_list", ()):
                if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "register":
                    presets[decorator.args[0].value] = ast.get_docstring(node, clean=False)
    return presets


def _summary(doc, limit=100):
    """The first sentence of a docstring's first paragraph, on one line (cut at `limit` characters)."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split()) or "(no docstring)"
    end = re.search(r"[.:]\s+(?=[A-Z])", paragraph)  # "Eq. 12" does not end a sentence
    sentence = paragraph if end is None else paragraph[:end.start() + 1]
    return sentence if len(sentence) <= limit else sentence[:limit - 3].rstrip() + "..."


def _origin(preset):
    """`"  [plugin]"` for a method registered outside keras_okd, else `""`."""
    module = getattr(preset, "__module__", "") or ""
    return "" if module.startswith("keras_okd.") else f"  [{module.removeprefix('keras_okd_plugin_')}]"


def _demo_config(method, args):
    """The demo run of `method` as an experiment config (checked like a YAML one), in the recipe of `args.dataset`
    with the options given overriding it (`_demo_recipe`): `students` x `model` (or one multi-branch `model` of
    `students` branches for methods that take one student), SGD with momentum 0.9 and coupled weight decay 5e-4 from
    `lr`, a linear warm-up of the rate over `lr_warmup_epochs`, then the recipe's schedule: cosine to 0
    (fashion_mnist_1k, as configs/fashion_mnist_1k), or the rate multiplied by 0.1 at 62.5%, 75% and 87.5% of
    training (the digits and the others: TSB's 150/180/210 of 240 epochs)."""
    import keras_okd.methods
    from keras_okd.experiments import config_from_dict
    from keras_okd.experiments.config import method_accepts, takes_one_student

    recipe = _demo_recipe(args)
    params = {}
    if method_accepts(keras_okd.methods.get(method), "warmup_epochs"):
        params["warmup_epochs"] = recipe["warmup_epochs"]
    if takes_one_student(method):
        students = {"model": recipe["model"], "branches": args.students}
    else:
        students = [recipe["model"]] * args.students
    dataset = {"name": args.dataset, "batch_size": recipe["batch_size"]}
    if recipe["train_size"] is not None:
        dataset["train_size"] = recipe["train_size"]
    if args.data_dir is not None:
        dataset["data_dir"] = args.data_dir
    schedule = {"type": recipe["schedule"], "warmup_epochs": recipe["lr_warmup_epochs"]}
    if recipe["schedule"] == "step":
        # A config's milestones increase strictly: a short demo (under 8 epochs) has fewer steps where two coincide.
        schedule.update(milestones=sorted({round(recipe["epochs"] * f) for f in _DEMO_LR_STEPS}), factor=0.1)
    return config_from_dict({
        "experiment": f"{args.dataset}_demo", "method": {"name": method, "params": params}, "students": students,
        "dataset": dataset,
        "optimizer": {"name": "sgd", "learning_rate": recipe["lr"], "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": schedule, "epochs": recipe["epochs"], "validation_freq": recipe["validation_freq"],
        "seeds": [args.seed],
    }, source="keras-okd train (the demo's options)")


def _train_run(config, run_dir, seed, verbose, finished=(), rerun="rerun the same command", backup_every=0.0):
    """`run_experiment` for the CLI: Ctrl-C says how to resume (`rerun`: what to run again), a full (or read-only)
    disk and a step the guard refused (`FloatingPointError`: the loss diverged) are messages; the results, or None
    after such an error (printed; exit status 1)."""
    from keras_okd import experiments

    try:
        return experiments.run_experiment(config, run_dir, seed, verbose=verbose, backup_every=backup_every)
    except KeyboardInterrupt:
        kept = ("every completed epoch" if not backup_every
                else f"its training up to its last backup (every {backup_every:g} s)")
        raise Interrupted(
            f"{run_dir} keeps {kept} (backup/); {rerun} to resume it from there"
            + (f" (finished: {', '.join(finished)})" if finished else "") + "."
        ) from None
    except FloatingPointError as error:  # the guard refused a diverging step: the config's numbers, not a crash
        print(f"keras-okd train: {run_dir}: {error} {run_dir} keeps every completed epoch (backup/); a resume "
              "continues only the same config, so fix it in a new run (another --run-dir).", file=sys.stderr)
        return None
    except OSError as error:
        from keras_okd.experiments.state import DiskError, disk_errno

        code = disk_errno(error)
        if code is None:
            raise
        from keras_okd.experiments.runner import BACKUP, RunCheckpoint

        what = str(error) if isinstance(error, DiskError) else \
            f"cannot write {error.filename or run_dir}: {os.strerror(code)}"
        done = RunCheckpoint(os.path.join(run_dir, BACKUP)).latest_epoch() if os.path.isdir(run_dir) else 0
        kept = f"its backup after epoch {done}" if done else "every file written before (no epoch was complete yet)"
        print(f"keras-okd train: {what}. Every file of the run is written aside first and no temporary file is "
              f"left, so {run_dir} still holds {kept}: make room (or fix the permissions) and {rerun} to resume.",
              file=sys.stderr)
        return None


def train_demo(args):
    """`keras-okd train` without --config: the method and (unless --no-baseline) the independent baseline, each a
    runner run directory `<run_dir>/<method>`, `<run_dir>/independent` (resumable; `keras-okd evaluate` and
    `keras-okd report` read them), the table of both and what one seed can and cannot say."""
    import keras

    from keras_okd.data import DatasetNotFoundError
    from keras_okd.experiments import ConfigError
    from keras_okd.experiments.runner import CONFIG

    with_baseline = not args.no_baseline and args.method != "independent"
    arms = {args.method: _demo_config(args.method, args)}  # checked before anything is written
    if with_baseline:
        arms["independent"] = _demo_config("independent", args)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = args.run_dir or os.path.join("runs", f"{args.method}-{args.dataset}-{stamp}")
    # Resuming needs the directory's name: the default one changes every run.
    rerun = "rerun the same command" if args.run_dir else f"rerun `{_demo_command(args, run_dir=run_dir)}`"
    created = not os.path.exists(run_dir)
    results = {}
    for name, config in arms.items():
        arm_dir = os.path.join(run_dir, name)
        finished = [os.path.join(run_dir, n) for n in results]
        try:
            result = _train_run(config, arm_dir, args.seed, args.verbose, finished, rerun, args.backup_every)
        except (ConfigError, DatasetNotFoundError):
            # Found before training (a dataset not on disk, an option its loader refuses): leave no empty run behind.
            if created and not results and not os.path.exists(os.path.join(arm_dir, CONFIG)):
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        if result is None:
            return DISK_EXIT
        results[name] = result
        print(f"Wrote {arm_dir}")

    recipe = _demo_recipe(args)
    table = _demo_table(results, args.method, args.students)
    columns = list(reversed(results))  # independent first, as in the papers' tables
    summary = {
        "backend": keras.backend.backend(),
        "method": args.method,
        "dataset": args.dataset,
        "num_train_samples": results[args.method]["num_train_samples"],
        "model": recipe["model"],
        "students": args.students,
        "epochs": recipe["epochs"],
        "seed": args.seed,
        "runs": {name: os.path.join(run_dir, name) for name in results},
        "seconds": {name: r["seconds"] for name, r in results.items()},
        "test_accuracy": table,
    }
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    markdown = _markdown(table, columns)
    with open(os.path.join(run_dir, "results.md"), "w") as f:
        f.write(markdown + "\n")
    held_out = "the 360 held-out digits" if args.dataset == "digits" else "the test split"
    print(f"\nAccuracy (%) on {held_out} after the last epoch, {args.dataset} "
          f"({summary['num_train_samples']} training images), backend {keras.backend.backend()}, seed {args.seed}:\n")
    print(markdown)
    print("\nTraining time: " + ", ".join(f"{name} {r['seconds']:.0f} s" for name, r in results.items())
          + f" ({recipe['epochs']} epochs each; results.json of each arm).")
    print(f"\nWrote the run directories {', '.join(summary['runs'].values())} and the table (results.md, "
          f"results.json) to {run_dir}. `keras-okd evaluate {run_dir}` re-scores the saved models, "
          f"`keras-okd report {run_dir}` writes the papers' table and the curves.")
    print("\n" + _conclusion(args, run_dir))
    return 0


def _demo_command(args, **changes):
    """The `keras-okd train` command of the demo `args` with `changes` (option name -> value; None drops it)."""
    options = {name: getattr(args, name) for name in (*_DEMO_DEFAULTS, "seed", "run_dir")} | changes
    words = ["keras-okd", "train"]
    for name, value in options.items():
        if value is None or value == _DEMO_DEFAULTS.get(name) or (name == "seed" and value == 0):
            continue
        if name == "no_baseline":
            words.append("--no-baseline")
        elif name == "imports":
            words += [w for spec in value for w in ("--import", spec)]
        else:
            words += [_flag(name), str(value)]
    return " ".join(f'"{w}"' if "$S" in w and w != "$S" else w if w == "$S" else shlex.quote(w) for w in words)


def _demo_table(results, method, students):
    """`{row: {arm: accuracy}}`: row student_i is peer i of each run (branch i of a multi-branch student; the
    teacher's peer i for a method that deploys its mean teacher), row ensemble the deployed ensemble."""
    rows = [f"student_{i}" for i in range(students)] + ["ensemble"]
    return {row: {arm: (list(r["net_accuracy"]) + [r["ensemble_accuracy"]])[i] for arm, r in results.items()}
            for i, row in enumerate(rows)}


def _markdown(table, columns):
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for row, values in table.items():
        lines.append(f"| {row} | " + " | ".join(_percent(values[c]) for c in columns) + " |")
    return "\n".join(lines)


def _config_commands(folder, method, experiment):
    """The commands that train every seed of configs/`folder`'s independent, DML and TSB configs (and `method`'s, when
    the folder has one), then report their runs (`runs/<experiment>`), each indented for the conclusion."""
    shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", folder)
    methods = [m for m in dict.fromkeys(("independent", "dml", "tsb", method))
               if m in ("independent", "dml", "tsb") or os.path.isfile(os.path.join(shipped, f"{m}.yaml"))]
    return [f"  keras-okd train --config configs/{folder}/{m}.yaml" for m in methods] + [
        f"  keras-okd report runs/{experiment}"]


def _conclusion(args, run_dir):
    """What one demo run can say, without numbers (the measured ones are in the README, with their commands)."""
    converged = _config_commands("fashion_mnist_1k", args.method, "fashion_mnist_1k_simple_cnn_8")
    benchmark = _config_commands("fashion_mnist", args.method, "fashion_mnist_simple_cnn")
    seeds = f"{run_dir.rstrip(os.sep)}-seeds"
    more_seeds = [f"  for S in 1 2 3 4; do {_demo_command(args, seed='$S', run_dir=seeds + '/seed_$S')}; done",
                  f"  keras-okd report {shlex.quote(run_dir)} {shlex.quote(seeds)}"]
    if args.dataset == "digits":
        return "\n".join([
            "What this run can and cannot show: the bundled digits are saturated. Trained alone, the students "
            "already classify nearly every held-out digit correctly, so there is almost nothing left for "
            "distillation to add. And one seed cannot show a gain or a loss: a single run's difference mixes the "
            "method's effect with seed-to-seed noise. Over several seeds, paired, neither DML nor TSB beats "
            "independent training on the digits (the README's table, `keras-okd report runs/digits_simple_cnn`).",
            "",
            "Where online KD was measured to help (TSB and DML ahead of independent training, the README's ledger "
            "table), on the 1,000 Fashion-MNIST images bundled with keras-okd (no download; `keras-okd train` "
            "without --dataset trains one seed of it), every seed of each config, then the paired table:",
            "",
            *converged,
            "",
            "To compare on the full Fashion-MNIST (`apt-get install dataset-fashion-mnist`, or Keras's download):",
            "",
            f"  {_demo_command(args, dataset='fashion_mnist', train_size=None, data_dir=None, seed=None, run_dir=None)}"
            "   # this demo on Fashion-MNIST",
            "",
            "and the benchmark (from a checkout of keras-okd: configs/), every seed of each config, then the table "
            "with the paired difference to independent training and its 95% interval:",
            "",
            *benchmark,
        ])
    if args.dataset == "fashion_mnist_1k":
        return "\n".join([
            "What this run can and cannot show: one seed is one sample. The difference between the columns above "
            "mixes the method's effect with seed-to-seed noise, so a single run can land on either side of it. The "
            "demo's default recipe is the regime where the README's ledger table found TSB (and DML, by less) ahead "
            "of independent training over 5 seeds, each paired with independent training of the same seed, with "
            "95% intervals (from a checkout of keras-okd: `keras-okd report ledger/n1000_plain`).",
            "",
            "That comparison with `keras-okd train` (from a checkout: configs/; its shuffle orders are not the "
            "ledger runs'), every seed of each config, then the paired table:",
            "",
            *converged,
            "",
            "or more seeds of this demo, with its options, into one folder, then the paired table of them all:",
            "",
            *more_seeds,
        ])
    lines = [
        "What this run can and cannot show: one seed is one sample. The difference between the columns above mixes "
        "the method's effect with seed-to-seed noise; only several seeds, paired, can separate "
        "them. Train more seeds of this demo into one folder and report them together (the paired difference to "
        "independent training with its 95% interval):",
        "",
        *more_seeds,
    ]
    if args.dataset == "fashion_mnist":
        lines += ["", "or the benchmark (from a checkout of keras-okd: configs/), every seed of each config:", "",
                  *benchmark]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
