"""Train one seed of an experiment config into a run directory, resumably; re-score a finished run.

A run directory holds:

    config.yaml            the resolved config (its `seeds` is this run's seed); rerunning checks it is unchanged
    history.csv            per-epoch logs (keras.callbacks.CSVLogger, appended across resumed sessions)
    tensorboard/           keras.callbacks.TensorBoard logs (when the tensorboard package is installed)
    backup/                keras.callbacks.BackupAndRestore state while training (removed when the run completes)
    progress.json          training seconds so far (summed over resumed sessions)
    student_{i}.keras      each student, a plain Keras model (list students)
    student.keras          the multi-branch student, and branch_{i}.keras each branch alone (multi-branch students)
    teacher_{i}.keras      the mean teacher's peers, for methods that deploy it (PCL, DKEL)
    ensemble.keras         the distiller's deployed ensemble model (averaged probabilities)
    results.json           final validation metrics, backend, seconds, seed: written last, marks the run complete
    evaluation.json        written by `keras-okd evaluate`
    .worker{i}/            the same files from process i of a multi-process run (the chief, process 0, writes above)

Resume: rerunning the same command on the same directory restores the last completed epoch from `backup/`, through
Keras's BackupAndRestore: the distiller's variables (students, optimizer, the temporal accumulator's bank and visit
counts, schedule weights) and the epoch counter; the learning-rate and knowledge schedules are functions of the
epoch, so they continue where they were. The data need no state: the training pipeline draws epoch e's shuffle order
and the tf.data augmentation of its step s from (seed, e, s) alone (`keras_okd.data.pipeline`), told e by its
`keras_okd.data.DataEpoch` callback, so a resumed run sees the same data as an uninterrupted one and ends in the same
state (tests/experiments/test_experiment_runner.py). Per-peer views made inside the training step resume exactly
when their random state lives in the model's variables, which BackupAndRestore restores. A completed run
(`results.json` present) is not trained again.
"""

import csv
import importlib.util
import inspect
import json
import os
import shutil
import time

import keras
import numpy as np

import keras_okd
from keras_okd.experiments.config import (
    config_differences,
    default_run_dir,
    dump_config,
    load_config,
    method_accepts,
)

RESULTS = "results.json"
CONFIG = "config.yaml"
HISTORY = "history.csv"
BACKUP = "backup"


class RunDirectoryError(ValueError):
    """The run directory holds a run of another config."""


class StepSchedule:
    """Learning rate of a 0-based epoch: `base * factor ** (number of milestones <= epoch)`, or constant.

    Milestones are counted like PyTorch's `MultiStepLR` stepped once per epoch: with milestones [150, 180, 210] the
    rate is multiplied by `factor` from the 151st epoch (index 150) on.
    """

    def __init__(self, base_lr, milestones=(), factor=0.1):
        self.base_lr, self.milestones, self.factor = float(base_lr), tuple(milestones), float(factor)

    def __call__(self, epoch, lr=None):
        return self.base_lr * self.factor ** sum(epoch >= m for m in self.milestones)

    def __repr__(self):
        return f"StepSchedule({self.base_lr}, milestones={list(self.milestones)}, factor={self.factor})"


def lr_schedule(config):
    """The `StepSchedule` of a resolved config (constant: no milestones)."""
    schedule = config["schedule"]
    base = config["optimizer"].get("learning_rate", 0.01)
    if schedule["type"] == "step":
        return StepSchedule(base, schedule["milestones"], schedule["factor"])
    return StepSchedule(base)


def build_optimizer(options):
    """A Keras optimizer from a resolved `optimizer` section."""
    options = dict(options)
    cls = type(keras.optimizers.get(options.pop("name")))
    return cls(**options)


def build_students(students, num_classes, input_shape, synchronized_bn=False):
    """`(what to pass to the preset, models to save)` for a resolved `students` section.

    A list of zoo names gives a list of zoo models; a multi-branch student `{model, branches, per_branch_inputs}`
    gives one `keras_okd.models.multi_branch` model.
    """
    if isinstance(students, dict):
        model = keras_okd.models.multi_branch(
            students["model"], num_branches=students["branches"], num_classes=num_classes, input_shape=input_shape,
            per_branch_inputs=students["per_branch_inputs"], synchronized_bn=synchronized_bn,
        )
        return model, [model]
    models = [keras_okd.models.get(name, num_classes=num_classes, input_shape=input_shape,
                                   synchronized_bn=synchronized_bn) for name in students]
    return models, models


def build_distiller(config, num_train_samples, num_classes, input_shape):
    """`(distiller, student models)`: the config's students, method preset and optimizer, compiled.

    Raises:
        ValueError: the method is not among `keras_okd.methods.names()` (a config may name a method that is not
            implemented yet).
    """
    # several TensorFlow replicas train one model: keep batch-norm statistics identical across them
    synchronized = config.get("strategy") in ("mirrored", "multi_worker")
    students, models = build_students(config["students"], num_classes, input_shape, synchronized)
    preset = keras_okd.methods.get(config["method"]["name"])
    kwargs = dict(config["method"]["params"])
    if isinstance(kwargs.get("views"), str):
        kwargs["views"] = peer_views(kwargs["views"], input_shape)
    if method_accepts(preset, "num_train_samples"):
        kwargs["num_train_samples"] = num_train_samples
    distiller = preset(students, **kwargs)
    options = dict(config["optimizer"])
    # The papers' weight decay is PyTorch's (added to the gradient before momentum): the distiller's coupled decay.
    weight_decay = options.pop("weight_decay", None) or 0.0
    distiller.compile(optimizer=build_optimizer(options), coupled_weight_decay=weight_decay)
    return distiller, models


def peer_views(kind, input_shape):
    """The per-peer augmentation layer of a config's `views` ("standard": shift + flip, "crop": shift only); the
    shift is up to 4 pixels (CIFAR's pad-4 crop) for images of 32 pixels or more, else an eighth of the side."""
    height, width = int(input_shape[0]), int(input_shape[1])
    padding = 4 if min(height, width) >= 32 else max(1, min(height, width) // 8)
    return keras_okd.data.peer_views(height, width, padding=padding, flip=kind == "standard")


def load_dataset(config, seed):
    """`(train_ds, test_ds, num_train_samples, num_classes, input_shape, data_epoch)` of a resolved config;
    `data_epoch` is the training pipeline's `keras_okd.data.DataEpoch` callback (None for a dataset not made by
    `keras_okd.data.pipeline`)."""
    options = dict(config["dataset"])
    name = options.pop("name")
    train, test, n = keras_okd.data.get(name, seed=seed, **options)
    try:
        clock = keras_okd.data.data_epoch(train)
    except ValueError:
        clock = None
    classes = keras_okd.data.num_classes(name, **options)
    if keras_okd.backend.jax_process_count() > 1:  # JAX processes split every training batch: full batches only
        default = inspect.signature(keras_okd.data.loader(name)).parameters["batch_size"].default
        batch = options.get("batch_size", default)
        train = train.rebatch(batch, drop_remainder=True)
        if n % batch:
            print(f"note: {keras_okd.backend.jax_process_count()} JAX processes need full training batches: each "
                  f"epoch leaves out the last {n % batch} of {n} shuffled samples (a different random set every "
                  "epoch). Test data are evaluated in full.")
    spec = train.element_spec[0]
    spec = spec["inputs"] if isinstance(spec, dict) else spec
    return train, test, n, classes, tuple(int(d) for d in spec.shape[1:]), clock


class _Progress(keras.callbacks.Callback):
    """Keeps `progress.json`: training seconds summed over sessions, and epochs done."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.state = {"seconds": 0.0, "epochs": 0}
        if os.path.exists(path):
            with open(path) as f:
                self.state.update(json.load(f))
        self.start = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.state["seconds"] += time.time() - self.start
        self.state["epochs"] = epoch + 1
        with open(self.path, "w") as f:
            json.dump(self.state, f)


def tensorboard(log_dir):
    """`[keras.callbacks.TensorBoard(log_dir)]`, or `[]` with a note when the `tensorboard` package (which
    `tf.summary` needs to write logs) is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        print("note: TensorBoard logs are not written: the `tensorboard` package is not installed "
              "(pip install tensorboard).")
        return []
    return [keras.callbacks.TensorBoard(log_dir)]


def metric_keys(row, num_peers, deploy=None):
    """Names, in a history row, of the deployed peers' and ensemble's validation accuracies and the peers' CE.

    Peers are logged as `student_{i}` (list students) or `branch_{i}` (a multi-branch student); a distiller that
    deploys its mean teacher (PCL, DKEL) logs `teacher_{i}_accuracy` and `teacher_ensemble_accuracy`, which are then
    the deployed numbers. `deploy` defaults to "teacher" when the row has teacher accuracies.

    Returns:
        `{"accuracy": [...], "ensemble": key, "ce": [...]}`.
    """
    peer = "branch" if "val_branch_0_accuracy" in row else "student"
    if deploy is None:
        deploy = "teacher" if "val_teacher_0_accuracy" in row else "students"
    shown = "teacher" if deploy == "teacher" else peer
    return {
        "accuracy": [f"val_{shown}_{i}_accuracy" for i in range(num_peers)],
        "ensemble": "val_teacher_ensemble_accuracy" if deploy == "teacher" else "val_ensemble_accuracy",
        "ce": [f"val_{peer}_{i}_ce" for i in range(num_peers)],
    }


def num_peers(config):
    """Number of peers of a resolved config: its students, or the branches of its multi-branch student."""
    students = config["students"]
    return students["branches"] if isinstance(students, dict) else len(students)


def read_history(path):
    """Rows of a `history.csv` as dicts of floats (epoch as int), one per epoch (a repeated epoch keeps its last row,
    as a resumed session rewrites the epoch it was killed in)."""
    if not os.path.exists(path):
        return []
    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    parsed[key] = value
            if "epoch" in parsed:
                parsed["epoch"] = int(parsed["epoch"])
                rows[parsed["epoch"]] = parsed
    return [rows[e] for e in sorted(rows)]


def run_experiment(config, run_dir, seed, callbacks=(), verbose=1):
    """Train one seed of a config into `run_dir`; resume it if the directory holds an interrupted run.

    Steps: seed everything (`keras.utils.set_random_seed`), load the dataset (`keras_okd.data.get`), build the
    students from the zoo and the distiller from the method preset (`num_train_samples` passed when the preset takes
    it), compile with the optimizer, fit with the method's callbacks, BackupAndRestore, CSVLogger, TensorBoard and the
    learning-rate schedule, then save the students (and each branch of a multi-branch student), the ensemble model and
    `results.json`. See the module docstring for the directory layout and what resuming restores.

    Args:
        config: a resolved config (`load_config`) or the path of a config file.
        run_dir: the run directory (created if needed).
        seed: the run's seed.
        callbacks: extra Keras callbacks for `fit`.
        verbose: Keras `fit` verbosity (1: progress bars).

    Returns:
        The results dict (also in `results.json`).

    Raises:
        RunDirectoryError: the directory holds a run of a different config.
        ValueError: the method is not implemented (`keras_okd.methods.get`).
        keras_okd.data.DatasetNotFoundError: the dataset is not on disk.
    """
    if not isinstance(config, dict):
        config = load_config(config)
    run_dir = str(run_dir)
    index, _ = keras_okd.distribute.process(config["strategy"])  # first: JAX processes must join before computing
    if index:  # every process trains and saves; the chief's files are the run's, the others' stay out of the way
        run_dir = os.path.join(run_dir, f".worker{index}")
    os.makedirs(run_dir, exist_ok=True)
    resolved = {**config, "seeds": [int(seed)]}
    _check_same_config(run_dir, resolved)
    results_path = os.path.join(run_dir, RESULTS)
    if os.path.exists(results_path):
        print(f"{run_dir}: already complete ({RESULTS} exists); delete the directory to train it again.")
        with open(results_path) as f:
            return json.load(f)
    dump_config(resolved, os.path.join(run_dir, CONFIG))

    keras.utils.set_random_seed(int(seed))
    train, test, n, classes, input_shape, clock = load_dataset(resolved, seed)
    with keras_okd.distribute.strategy_scope(resolved["strategy"]):
        distiller, models = build_distiller(resolved, n, classes, input_shape)
    history_path = os.path.join(run_dir, HISTORY)
    progress = _Progress(os.path.join(run_dir, "progress.json"))
    fit_callbacks = keras_okd.callbacks.for_method(distiller) + ([clock] if clock is not None else []) + [
        keras.callbacks.CSVLogger(history_path, append=True),
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, BACKUP), delete_checkpoint=False),
        *tensorboard(os.path.join(run_dir, "tensorboard")),
        keras.callbacks.LearningRateScheduler(lr_schedule(resolved)),
        progress,
        *callbacks,
    ]
    done = len(read_history(history_path))
    what = f"{resolved['experiment']} / {resolved['method']['name']} / seed {seed}"
    print(f"\n== {what}: {n} training samples, {classes} classes, epochs {done + 1}..{resolved['epochs']}"
          if done else f"\n== {what}: {n} training samples, {classes} classes, {resolved['epochs']} epochs")
    start = time.time()
    with keras_okd.distribute.strategy_scope(resolved["strategy"]):
        distiller.fit(train, validation_data=test, epochs=resolved["epochs"], callbacks=fit_callbacks,
                      verbose=verbose)
    session_seconds = time.time() - start

    files = save_models(distiller, models, resolved["students"], run_dir)
    history = read_history(history_path)
    final = {k: v for k, v in (history[-1] if history else {}).items() if k.startswith("val_")}
    keys = metric_keys(final, num_peers(resolved), files["deploy"])
    results = {
        "experiment": resolved["experiment"],
        "paper": resolved["paper"],
        "method": resolved["method"]["name"],
        "seed": int(seed),
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "epochs": len(history),
        "num_train_samples": n,
        "num_classes": classes,
        "seconds": round(progress.state["seconds"], 1),
        "session_seconds": round(session_seconds, 1),
        "net_accuracy": [final.get(k) for k in keys["accuracy"]],
        "ensemble_accuracy": final.get(keys["ensemble"]),
        "final": final,
        **files,
    }
    with open(results_path, "w") as f:
        json.dump(results, f, indent=2)
    shutil.rmtree(os.path.join(run_dir, BACKUP), ignore_errors=True)
    return results


def _unsynchronized(config):
    """A model config with every `BatchNormalization(synchronized=True)` turned into a plain one."""
    if isinstance(config, dict):
        return {k: (False if k == "synchronized" else _unsynchronized(v)) for k, v in config.items()}
    if isinstance(config, list):
        return [_unsynchronized(v) for v in config]
    return config


def save_portable(model, path):
    """Save `model` as a `.keras` file that loads on every backend.

    Synchronized batch norm (used under multi-replica strategies) only exists on TensorFlow, and Keras refuses to load
    it elsewhere; its weights are those of a plain batch norm, so the model is saved as the same architecture with
    plain batch norm and the same weights.
    """
    config = model.get_config()
    plain = _unsynchronized(config)
    if plain != config:
        rebuilt = model.__class__.from_config(plain)
        rebuilt.set_weights(model.get_weights())
        model = rebuilt
    model.save(path)


def save_models(distiller, models, students, run_dir):
    """Save the trained networks as plain `.keras` models; returns `{"models": [file names], "ensemble": ...}`.

    List students: `student_{i}.keras`. A multi-branch student: `student.keras` (all branches) and
    `branch_{i}.keras` (trunk + branch i, `keras_okd.models.extract_branch`). A distiller that deploys a mean teacher
    (PCL, DKEL): also `teacher_{i}.keras`, its peers. `ensemble.keras`: the distiller's (deployed) ensemble model.
    """
    saved = []
    if isinstance(students, dict):
        model = models[0]
        save_portable(model, os.path.join(run_dir, "student.keras"))
        saved.append("student.keras")
        for i in range(students["branches"]):
            name = f"branch_{i}.keras"
            save_portable(keras_okd.models.extract_branch(model, i), os.path.join(run_dir, name))
            saved.append(name)
    else:
        for i, model in enumerate(models):
            name = f"student_{i}.keras"
            save_portable(model, os.path.join(run_dir, name))
            saved.append(name)
    out = {"models": saved, "ensemble": None, "deploy": deployed(distiller)}
    if out["deploy"] == "teacher":
        for i in range(distiller.num_peers):
            name = f"teacher_{i}.keras"
            save_portable(distiller.peer_model(i, teacher=True), os.path.join(run_dir, name))
            saved.append(name)
    ensemble = getattr(distiller, "ensemble_model", None)
    if callable(ensemble):
        try:
            save_portable(ensemble(), os.path.join(run_dir, "ensemble.keras"))
            out["ensemble"] = "ensemble.keras"
        except Exception as error:  # the students are saved; an ensemble that cannot be built must not lose the run
            out["ensemble_error"] = f"{type(error).__name__}: {error}"
            print(f"warning: could not save the ensemble model: {out['ensemble_error']}")
    return out


def deployed(distiller):
    """`"teacher"` when the distiller deploys its mean teacher (PCL, DKEL), else `"students"`."""
    return "teacher" if getattr(distiller, "deploy", "students") == "teacher" else "students"


def _check_same_config(run_dir, resolved):
    path = os.path.join(run_dir, CONFIG)
    if not os.path.exists(path):
        return
    saved = load_config(path)
    differences = config_differences(saved, resolved)
    if differences:
        raise RunDirectoryError(
            f"{run_dir} holds a run of a different config (differences in {', '.join(differences)}; saved config: "
            f"{path}). Pass another --run-dir, or delete the directory to start over."
        )


def peer_files(run_dir, config):
    """`[(name, file)]` of a run's saved peer models: branches of a multi-branch student or the students, then the
    teacher's peers and the ensemble when saved."""
    students = config["students"]
    if isinstance(students, dict):
        files = [(f"student_{i}", f"branch_{i}.keras") for i in range(students["branches"])]
    else:
        files = [(f"student_{i}", f"student_{i}.keras") for i in range(len(students))]
    teachers = [(f"teacher_{i}", f"teacher_{i}.keras") for i in range(len(files))]
    files += [t for t in teachers if os.path.exists(os.path.join(run_dir, t[1]))]
    if os.path.exists(os.path.join(run_dir, "ensemble.keras")):
        files.append(("ensemble", "ensemble.keras"))
    return files


def evaluate_run(run_dir, batch_size=None):
    """Re-score a run's saved students (or branches) and ensemble on its test split.

    Loads the `.keras` files with `keras.saving.load_model` (plain Keras models) and the test split from the saved
    config; writes `evaluation.json`.

    Args:
        run_dir: a run directory written by `run_experiment`.
        batch_size: test batch size (default: the config's).

    Returns:
        `{"backend", "num_test_samples", "scores": {"student_0": {"accuracy", "loss", "file"}, ..., "teacher_0": ...,
        "ensemble": ...}}` (accuracy a fraction; loss the mean cross-entropy).
    """
    config = load_config(os.path.join(run_dir, CONFIG))
    options = dict(config["dataset"])
    name = options.pop("name")
    if batch_size:
        options["batch_size"] = int(batch_size)
    _, test, _ = keras_okd.data.get(name, seed=config["seeds"][0], **options)
    labels = np.concatenate([np.asarray(y) for y in test.map(lambda x, y: y).as_numpy_iterator()]).astype("int64")
    images = test.map(lambda x, y: x)
    scores, probabilities = {}, {}
    for label, file in peer_files(run_dir, config):
        path = os.path.join(run_dir, file)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing: is the run complete ({RESULTS} present)?")
        try:
            model = keras.saving.load_model(path)
        except Exception as error:  # report a file that does not load, score the others
            scores[label] = {"file": file, "error": f"{type(error).__name__}: {error}"}
            continue
        outputs = np.asarray(model.predict(images, verbose=0)).astype("float64")
        probabilities[label] = outputs if _are_probabilities(outputs) else _softmax(outputs)
        scores[label] = {**_score(probabilities[label], labels), "file": file}
    deployed_peers = [p for name, p in probabilities.items() if name.startswith("teacher_")] or [
        p for name, p in probabilities.items() if name.startswith("student_")]
    if deployed_peers:
        mean = np.mean(deployed_peers, axis=0)
        if "ensemble" in probabilities:
            scores["ensemble"]["matches_peers"] = bool(np.allclose(probabilities["ensemble"], mean, atol=1e-4))
        else:  # no loadable ensemble file: the ensemble is the mean of the deployed peers' probabilities
            scores["ensemble"] = {**_score(mean, labels), "file": scores.get("ensemble", {}).get("file"),
                                  "from": "mean of the peers' probabilities",
                                  **({"error": scores["ensemble"]["error"]} if "ensemble" in scores else {})}
    result = {"backend": keras.backend.backend(), "num_test_samples": int(len(labels)), "scores": scores}
    with open(os.path.join(run_dir, "evaluation.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def _score(probabilities, labels):
    picked = probabilities[np.arange(len(labels)), labels]
    return {
        "accuracy": float(np.mean(np.argmax(probabilities, axis=-1) == labels)),
        "loss": float(np.mean(-np.log(np.maximum(picked, 1e-12)))),
    }


def _are_probabilities(x):
    return bool(x.min() >= 0.0 and np.allclose(x.sum(axis=-1), 1.0, atol=1e-3))


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def run_dirs(config, run_dir=None, seeds=None, root="runs"):
    """`[(seed, directory)]` for a config: `run_dir` itself for one seed given a `run_dir`, else `seed_<s>`
    sub-directories of `run_dir` (default `runs/<experiment>/<method>`)."""
    seeds = list(config["seeds"] if seeds is None else seeds)
    if run_dir is not None and len(seeds) == 1:
        return [(seeds[0], str(run_dir))]
    base = str(run_dir) if run_dir is not None else default_run_dir(config, root)
    return [(s, os.path.join(base, f"seed_{s}")) for s in seeds]
