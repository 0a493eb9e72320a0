"""Train one seed of an experiment config into a run directory, resumably; re-score a finished run.

A run directory holds:

    config.yaml            the resolved config (its `seeds` is this run's seed); rerunning checks it is unchanged.
                           Written when training starts, after the data and networks were built without error
    run.lock               the owner: one process trains in a directory at a time (keras_okd.experiments.state)
    history.csv            per-epoch logs (keras.callbacks.CSVLogger), made consistent with the backup on resume
    tensorboard/           keras.callbacks.TensorBoard logs (when the tensorboard package is installed)
    backup/                the last two backups (RunCheckpoint: after every epoch, or every `backup_every` seconds of
                           training) while training (removed when the run completes)
    progress.json          epochs done and training seconds of those epochs (summed over resumed sessions)
    student_{i}.keras      each student, a plain Keras model (list students)
    student.keras          the multi-branch student, and branch_{i}.keras each branch alone (multi-branch students)
    teacher_{i}.keras      the mean teacher's peers, for methods that deploy it (PCL, DKEL)
    ensemble.keras         the distiller's deployed ensemble model (averaged probabilities)
    results.json           final validation metrics, backend, seconds, seed: written last, marks the run complete
    evaluation.json        written by `keras-okd evaluate`
    .worker{i}/            the same files from process i of a multi-process run (the chief, process 0, writes above)

Every file is written aside and renamed into place (`keras_okd.experiments.state.atomic_save`), so a kill at any
moment leaves each file whole, old or new; the fault-injection test (tests/experiments/test_fault_injection.py)
kills training processes at those moments and checks that the rerun ends exactly as an uninterrupted run.

Resume: rerunning the same command on the same directory restores the newest intact backup (`RunCheckpoint`, which
verifies each backup's SHA-256 and falls back to the previous one): the distiller's variables (students, optimizer,
the temporal accumulator's bank and visit counts, the teacher, schedule weights; per-peer views' random state when
it lives in a layer weight, not in a Keras `SeedGenerator`, whose state `save_weights` skips) and the epoch counter; the learning-rate and knowledge schedules are functions of the epoch,
so they continue where they were. The data need no state: the training pipeline draws epoch e's shuffle order and
the tf.data augmentation of its step s from (seed, e, s) alone (`keras_okd.data.pipeline`), told e by its
`keras_okd.data.DataEpoch` callback, so a resumed run sees the same data as an uninterrupted one and ends in the
same state, bit for bit on CPU (tests/experiments/test_experiment_runner.py, benchmarks/resume_equality.py). Only
the run that wrote the backup is resumed: a backup records the resolved config and the backend, Keras and engine
versions, and a resume with any of them changed is refused (`ResumeMismatchError`, naming each difference). A
completed run (`results.json` present) is not trained again.

A full, over-quota or read-only disk stops a run with one `DiskError` naming the file (every write goes through
`keras_okd.experiments.state.atomic_save`, and the callbacks that keep their own files open through `disk_guarded`);
the directory keeps every completed epoch.
"""

import importlib.util
import inspect
import json
import os
import shutil
import sys
import time
import zipfile

import keras
import numpy as np
import scipy.special

import keras_okd
from keras_okd.experiments.config import (
    STRATEGY_BACKENDS,
    ConfigError,
    config_differences,
    default_run_dir,
    dump_config,
    load_config,
    load_run_config,
    method_accepts,
    where,
    with_seed,
)
from keras_okd.experiments.schedules import learning_rate
from keras_okd.experiments.state import (
    DiskError,
    RunCheckpoint,
    RunDirectoryError,
    RunLock,
    RunLockedError,  # noqa: F401 - raised through RunLock; importable from here like RunDirectoryError
    atomic_json,
    atomic_save,
    atomic_write,
    disk_guarded,
    read_history_rows,
    read_json,
    remove_temporaries,
)

RESULTS = "results.json"
CONFIG = "config.yaml"
HISTORY = "history.csv"
PROGRESS = "progress.json"
BACKUP = "backup"


def lr_schedule(config, steps_per_epoch):
    """The optimizer's `learning_rate` for a resolved config: a number, or a Keras `LearningRateSchedule` of the
    step (`keras_okd.experiments.schedules.learning_rate`: step, cosine or constant, with the optional linear
    warm-up), evaluated at `optimizer.iterations`, which the backups save.

    Args:
        config: a resolved config.
        steps_per_epoch: training batches per epoch (`steps_per_epoch(train)`).
    """
    return learning_rate(config["schedule"], config["optimizer"].get("learning_rate", 0.01), config["epochs"],
                         steps_per_epoch)


def steps_per_epoch(train):
    """Batches per epoch of a training dataset: a `tf.data.Dataset` of known cardinality, or anything with `len`.

    Raises:
        ValueError: the number is unknown (an infinite or filtered dataset): the learning-rate schedule needs it.
    """
    count = len(train) if hasattr(train, "__len__") and not hasattr(train, "cardinality") else int(train.cardinality())
    if count < 1:
        raise ValueError(f"the training data have no known number of batches per epoch (got {count}); the "
                         "learning-rate schedule counts epochs in batches.")
    return count


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


def build_distiller(config, num_train_samples, num_classes, input_shape, batches_per_epoch=None):
    """`(distiller, student models)`: the config's students, method preset and optimizer, compiled.

    The optimizer's learning rate follows the config's `schedule` per step (`lr_schedule`) when
    `batches_per_epoch` is given; without it (throw-away distillers that never train) it is the base rate.

    Raises:
        ConfigError: a student network cannot be built for the dataset's images (too deep for their size), named
            with the config's `students` line.
    """
    # several TensorFlow replicas train one model: keep batch-norm statistics identical across them
    synchronized = config.get("strategy") in ("mirrored", "multi_worker")
    try:
        students, models = build_students(config["students"], num_classes, input_shape, synchronized)
    except (ValueError, TypeError) as error:
        shape = "x".join(str(d) for d in input_shape)
        raise ConfigError([f"{where(config, 'students')}: students: {config['students']} cannot be built for the "
                           f"{shape} images of dataset {config['dataset']['name']!r} ({num_classes} classes): "
                           f"{' '.join(str(error).split())[:400]}"]) from None
    preset = keras_okd.methods.get(config["method"]["name"])
    kwargs = dict(config["method"]["params"])
    if isinstance(kwargs.get("views"), str):
        kwargs["views"] = peer_views(kwargs["views"], input_shape)
    if method_accepts(preset, "num_train_samples"):
        kwargs["num_train_samples"] = num_train_samples
    try:
        distiller = preset(students, **kwargs)
    except (ValueError, TypeError) as error:  # e.g. kd without its pretrained teacher
        raise ConfigError([f"{where(config, 'method')}: method {config['method']['name']!r} refused its "
                           f"parameters for these students: {' '.join(str(error).split())[:600]}"]) from None
    options = dict(config["optimizer"])
    # The papers' weight decay is PyTorch's (added to the gradient before momentum): the distiller's coupled decay.
    weight_decay = options.pop("weight_decay", None) or 0.0
    if batches_per_epoch is not None:
        options["learning_rate"] = lr_schedule(config, batches_per_epoch)
    distiller.compile(optimizer=build_optimizer(options), coupled_weight_decay=weight_decay)
    return distiller, models


def peer_views(kind, input_shape):
    """The per-peer augmentation layer of a config's `views` ("standard": shift + flip, "crop": shift only); the
    shift is up to 4 pixels (CIFAR's pad-4 crop) for images of 32 pixels or more, else an eighth of the side."""
    height, width = int(input_shape[0]), int(input_shape[1])
    padding = 4 if min(height, width) >= 32 else max(1, min(height, width) // 8)
    return keras_okd.data.peer_views(height, width, padding=padding, flip=kind == "standard")


#: The test split is evaluated in batches of this many times the training batch: evaluation keeps no activations for
#: a backward pass, so it fits in less memory than a training step, and at the training batch (64) evaluating the
#: 10,000 Fashion-MNIST test images every 10 epochs was ~20% of a 150-epoch run of two small CNNs
#: (benchmarks/results/2026-12-02-quiet-2/whole_run_profile_30_epochs.txt). Each sample's prediction is the same at any
#: batch size (batch norm in inference mode), so accuracies do not depend on it; the loss of a term that compares the
#: samples of a batch with each other (contrastive, relational) does, as it depends on the training batch.
EVAL_BATCH_FACTOR = 4


def load_dataset(config, seed):
    """`(train_ds, test_ds, num_train_samples, num_classes, input_shape, data_epoch)` of a resolved config;
    `data_epoch` is the training pipeline's `keras_okd.data.DataEpoch` callback (None for a dataset not made by
    `keras_okd.data.pipeline`). The test split comes in batches of `EVAL_BATCH_FACTOR` training batches."""
    options = dict(config["dataset"])
    name = options.pop("name")
    train, test, n = keras_okd.data.get(name, seed=seed, **options)
    parameter = inspect.signature(keras_okd.data.loader(name)).parameters.get("batch_size")
    batch = options.get("batch_size", parameter.default if parameter is not None else None)
    if isinstance(batch, int) and batch >= 1:  # a plugin's loader without a batch size keeps its own batches
        test = test.rebatch(EVAL_BATCH_FACTOR * batch)
    try:
        clock = keras_okd.data.data_epoch(train)
    except ValueError:
        clock = None
    classes = keras_okd.data.num_classes(name, **options)
    if keras_okd.backend.jax_process_count() > 1:  # JAX processes split every training batch: full batches only
        train = train.rebatch(batch, drop_remainder=True)
        if n % batch:
            print(f"note: {keras_okd.backend.jax_process_count()} JAX processes need full training batches: each "
                  f"epoch leaves out the last {n % batch} of {n} shuffled samples (a different random set every "
                  "epoch). Test data are evaluated in full.")
    spec = train.element_spec[0]
    spec = spec["inputs"] if isinstance(spec, dict) else spec
    return train, test, n, classes, tuple(int(d) for d in spec.shape[1:]), clock


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


def read_history(path, problems=None):
    """Rows of a `history.csv` as dicts of floats (epoch as int), one per epoch in order. Rows that a kill cut
    short, a second header and unreadable rows are skipped (a repeated epoch keeps its last row); what was skipped is
    appended to `problems` when a list is given, else printed as a warning.

    Args:
        path: a `history.csv` (Keras's `CSVLogger` format, as `run_experiment` writes it).
        problems: a list that receives a message per skipped row (None: print them to stderr).

    Returns:
        A list of dicts, `{"epoch": int, "loss": float, "val_ensemble_accuracy": float, ...}`.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "history.csv")
    >>> with open(path, "w") as f:
    ...     _ = f.write("epoch,loss,val_ensemble_accuracy\\n0,2.25,0.5\\n1,1.5,0.75\\n2,1.2")   # a kill cut the last row
    >>> problems = []
    >>> [(row["epoch"], row["val_ensemble_accuracy"]) for row in read_history(path, problems)]
    [(0, 0.5), (1, 0.75)]
    >>> len(problems)
    1
    """
    rows, found = read_history_rows(str(path))
    if problems is not None:
        problems.extend(found)
    elif found:
        print("warning: " + "; ".join(found), file=sys.stderr)
    return rows


def run_experiment(config, run_dir, seed, callbacks=(), verbose=1, backup_every=0.0):
    """Train one seed of a config into `run_dir`; resume it if the directory holds an interrupted run.

    Steps: check the config for this backend, take the directory's lock, seed everything
    (`keras.utils.set_random_seed`), load the dataset (`keras_okd.data.get`), build the students from the zoo and the
    distiller from the method preset (`num_train_samples` passed when the preset takes it), compile with the
    optimizer; only then write `config.yaml` and fit with the method's callbacks, the data's `DataEpoch`, the run's
    `RunCheckpoint` (backups), CSVLogger, TensorBoard and the learning-rate schedule; then save the students (and each
    branch of a multi-branch student), the ensemble model and `results.json`. Every file is written atomically. See
    the module docstring for the directory layout and what resuming restores.

    A directory whose config differs is refused, unless no epoch of it completed (a run that failed before its first
    backup, e.g. on a bad value found once training started): that one is started over with the new config, with a
    note.

    Args:
        config: a resolved config (`load_config`) or the path of a config file.
        run_dir: the run directory (created if needed).
        seed: the run's seed.
        callbacks: extra Keras callbacks for `fit`.
        verbose: Keras `fit` verbosity (1: progress bars).
        backup_every: seconds of training between two backups (`RunCheckpoint(every_seconds=...)`; the last epoch
            is always backed up): 0 backs up every epoch. Not part of the config: a resume from any backup ends as
            the uninterrupted run does.

    Returns:
        The results dict (also in `results.json`).

    Raises:
        ConfigError: a value the config check could not see before (a dataset option its loader refuses, a network
            that does not fit the images, a strategy this backend lacks, an empty dataset), named with its file line.
        RunDirectoryError: the directory holds a run of a different config, is a file, or has a damaged
            `results.json`; `RunLockedError` (a subclass): another live process trains in it.
        keras_okd.data.DatasetNotFoundError: the dataset is not on disk.

    Example:

    ```python
    config = keras_okd.experiments.load_config("configs/digits/dml.yaml", ["epochs=2"])
    for seed, run_dir in keras_okd.experiments.run_dirs(config):      # runs/digits_simple_cnn/dml/seed_<s>
        results = keras_okd.experiments.run_experiment(config, run_dir, seed)
        print(seed, results["ensemble_accuracy"], results["net_accuracy"])
    # killed mid-run? the same call resumes from the last completed epoch
    ```
    """
    if not isinstance(config, dict):
        config = load_config(config)
    check_for_backend(config)
    run_dir = str(run_dir)
    index, _ = keras_okd.distribute.process(config["strategy"])  # first: JAX processes must join before computing
    if index:  # every process trains and saves; the chief's files are the run's, the others' stay out of the way
        run_dir = os.path.join(run_dir, f".worker{index}")
    created, started = not os.path.exists(run_dir), False
    make_run_dir(run_dir)
    try:
        with RunLock(run_dir) as lock:
            if lock.note:
                print(lock.note)
            remove_temporaries(run_dir, os.path.join(run_dir, BACKUP))
            try:
                return _run_owned(config, run_dir, int(seed), callbacks, verbose, backup_every)
            finally:  # a run that never started (no config.yaml: e.g. its data is missing) leaves no lock behind
                started = os.path.exists(os.path.join(run_dir, CONFIG))
                if not started:
                    _remove(lock.path)
    finally:
        if created and not started:
            _remove(run_dir, directory=True)  # only if empty


def _remove(path, directory=False):
    try:
        (os.rmdir if directory else os.remove)(path)
    except OSError:
        pass


def make_run_dir(run_dir):
    """Create the run directory (and its parents).

    Raises:
        RunDirectoryError: the path, or a parent of it, is a file, or cannot be created.
    """
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunDirectoryError(f"{run_dir} is a file, not a run directory: pass another --run-dir.")
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as error:
        raise RunDirectoryError(f"cannot create the run directory {run_dir}: {error.strerror or error} "
                                f"({error.filename or run_dir}).") from None


def _run_owned(config, run_dir, seed, callbacks, verbose, backup_every=0.0):
    """`run_experiment` once the directory is this process's."""
    resolved = with_seed(config, seed)
    results_path = os.path.join(run_dir, RESULTS)
    checkpoint = RunCheckpoint(os.path.join(run_dir, BACKUP), os.path.join(run_dir, HISTORY),
                               os.path.join(run_dir, PROGRESS), verbose=verbose,
                               config=json.loads(json.dumps(dict(resolved))), every_seconds=backup_every)
    _check_same_config(run_dir, resolved, checkpoint)
    checkpoint.check_resume()  # a backup of another config, backend or version is not resumed by this one
    if os.path.exists(results_path):
        results, problem = read_json(results_path)
        if problem is None and isinstance(results, dict):
            print(f"{run_dir}: already complete ({RESULTS} exists); delete the directory to train it again.")
            return results
        raise RunDirectoryError(
            f"{problem or results_path + ' does not hold results'}: the run finished (its models are saved), but its "
            f"results cannot be read. `keras-okd evaluate {run_dir}` re-scores the saved models; delete {RESULTS} "
            "and the models to train it again."
        )

    keras.utils.set_random_seed(seed)
    train, test, n, classes, input_shape, clock = load_checked_dataset(resolved, seed)
    with keras_okd.distribute.strategy_scope(resolved["strategy"]):
        distiller, models = build_distiller(resolved, n, classes, input_shape, steps_per_epoch(train))
    config_path = os.path.join(run_dir, CONFIG)
    if not os.path.exists(config_path):  # written once training can start: an error before leaves nothing behind
        atomic_write(config_path, dump_config(resolved))
    history_path = os.path.join(run_dir, HISTORY)
    fit_callbacks = keras_okd.callbacks.for_method(distiller) + ([clock] if clock is not None else []) + [
        checkpoint,  # before CSVLogger: it restores the history that CSVLogger appends to
        disk_guarded(keras.callbacks.CSVLogger(history_path, append=True), history_path),
        *[disk_guarded(board, board.log_dir) for board in tensorboard(os.path.join(run_dir, "tensorboard"))],
        *callbacks,
    ]
    done, total = checkpoint.latest_epoch(), resolved["epochs"]
    what = f"{resolved['experiment']} / {resolved['method']['name']} / seed {seed}: {n} training samples, " \
           f"{classes} classes"
    if done >= total:
        print(f"\n== {what}: all {total} epochs are done (backup in {checkpoint.backup_dir}); saving the models")
    elif done:
        print(f"\n== {what}: resuming after epoch {done}, epochs {done + 1}..{total}")
    else:
        print(f"\n== {what}, {total} epochs")
    start = time.time()
    with keras_okd.distribute.strategy_scope(resolved["strategy"]):
        distiller.fit(train, validation_data=test, epochs=total, callbacks=fit_callbacks, verbose=verbose,
                      validation_freq=resolved["validation_freq"])
    session_seconds = time.time() - start

    files = save_models(distiller, models, resolved["students"], run_dir)
    results = run_results(resolved, seed, checkpoint.rows, n, classes, checkpoint.seconds, session_seconds, files)
    atomic_json(results_path, results)  # written last: it marks the run complete
    shutil.rmtree(os.path.join(run_dir, BACKUP), ignore_errors=True)
    return results


def run_results(config, seed, history, num_train_samples, num_classes, seconds, session_seconds, files):
    """The `results.json` of a finished run: what it is, where it ran, its last epoch's validation metrics (`final`)
    and the deployed networks' and ensemble's accuracies read from them.

    Args:
        config: the run's resolved config.
        seed: its seed.
        history: its `history.csv` rows (`read_history`), one per epoch.
        num_train_samples: training set size.
        num_classes: number of classes.
        seconds: training seconds over all sessions.
        session_seconds: training seconds of this session.
        files: what `save_models` returned (`models`, `ensemble`, `deploy`).
    """
    final = {k: v for k, v in (history[-1] if history else {}).items() if k.startswith("val_")}
    keys = metric_keys(final, num_peers(config), files["deploy"])
    return {
        "experiment": config["experiment"],
        "paper": config["paper"],
        "method": config["method"]["name"],
        "seed": seed,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "epochs": len(history),
        "num_train_samples": num_train_samples,
        "num_classes": num_classes,
        "seconds": round(seconds, 1),
        "session_seconds": round(session_seconds, 1),
        "net_accuracy": [final.get(k) for k in keys["accuracy"]],
        "ensemble_accuracy": final.get(keys["ensemble"]),
        "final": final,
        **files,
    }


def check_for_backend(config):
    """Checks of a config that depend on this process: a strategy the backend lacks.

    Raises:
        ConfigError: naming the key, its file line, the value and what this backend accepts.
    """
    strategy = config.get("strategy", "none")
    backend = keras.backend.backend()
    needs = STRATEGY_BACKENDS.get(strategy)
    if needs and needs != backend:
        accepted = ["none"] + [name for name, b in STRATEGY_BACKENDS.items() if b == backend]
        raise ConfigError([f"{where(config, 'strategy')}: strategy: {strategy!r} needs KERAS_BACKEND={needs}; this "
                           f"process runs {backend}, which accepts {', '.join(accepted)}."])


def load_checked_dataset(config, seed):
    """`load_dataset`, with a loader's refusal of an option and an empty dataset turned into `ConfigError`s that
    name the config's `dataset` line."""
    try:
        train, test, n, classes, input_shape, clock = load_dataset(config, seed)
    except keras_okd.data.DatasetNotFoundError:
        raise
    except (ValueError, TypeError) as error:
        named = [k for k in config["dataset"] if k != "name" and k in str(error)]  # the option the loader names
        key = ("dataset", named[0]) if named else ("dataset",)
        raise ConfigError([f"{where(config, *key)}: {'.'.join(key)}: {config['dataset']['name']!r} refused it: "
                           f"{error}"]) from None
    if n < 1:
        raise ConfigError([f"{where(config, 'dataset')}: dataset: {config['dataset']['name']!r} has no training "
                           f"samples (options {_options(config['dataset'])}); check data_dir and the split options."])
    if int(test.cardinality()) == 0:
        raise ConfigError([f"{where(config, 'dataset')}: dataset: {config['dataset']['name']!r} has no test "
                           f"samples (options {_options(config['dataset'])})."])
    return train, test, n, classes, input_shape, clock


def _options(section):
    return ", ".join(f"{k}={v!r}" for k, v in section.items() if k != "name") or "none"


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
    plain batch norm and the same weights. The file is written aside and renamed into place.
    """
    config = model.get_config()
    plain = _unsynchronized(config)
    if plain != config:
        rebuilt = model.__class__.from_config(plain)
        rebuilt.set_weights(model.get_weights())
        model = rebuilt
    needs = sum(w.nbytes for w in model.get_weights())  # checked free first: the zip holds every weight
    atomic_save(model.save, path, needs=needs)  # written aside, then renamed: a kill never leaves half a model


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


def _check_same_config(run_dir, resolved, checkpoint):
    """Refuse a directory that holds a run of another config, unless no epoch of that run completed (no backup, no
    results): then it is cleared for the new config, with a note."""
    path = os.path.join(run_dir, CONFIG)
    if not os.path.exists(path):
        return
    try:
        saved = load_config(path, check_params=False)
        differences = config_differences(saved, resolved)
        problem = f"differences in {', '.join(differences)}"
    except ConfigError as error:
        differences, problem = ["config.yaml"], f"its config.yaml does not read: {error}"
    if not differences:
        return
    if os.path.exists(os.path.join(run_dir, RESULTS)) or checkpoint.latest_epoch() > 0:
        raise RunDirectoryError(
            f"{run_dir} holds a run of a different config ({problem}; saved config: {path}). Pass another "
            "--run-dir, or delete the directory to start over."
        )
    print(f"note: {run_dir} held a run of another config ({problem}) that never completed an epoch; starting it "
          "over with this config.")
    for name in (CONFIG, HISTORY, PROGRESS):
        if os.path.exists(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))
    shutil.rmtree(os.path.join(run_dir, BACKUP), ignore_errors=True)


def peer_files(run_dir, config, results=None):
    """`[(name, file)]` of a run's saved models: branches of a multi-branch student or the students, then the
    teacher's peers and the ensemble. With the run's `results` (its `results.json`) the teacher's peers and the
    ensemble are listed when the run saved them; without, when their files exist."""
    students = config["students"]
    if isinstance(students, dict):
        files = [(f"student_{i}", f"branch_{i}.keras") for i in range(students["branches"])]
    else:
        files = [(f"student_{i}", f"student_{i}.keras") for i in range(len(students))]
    teachers = [(f"teacher_{i}", f"teacher_{i}.keras") for i in range(len(files))]
    if results is not None:
        files += [t for t in teachers if t[1] in (results.get("models") or [])]
        if results.get("ensemble"):
            files.append(("ensemble", results["ensemble"]))
        return files
    files += [t for t in teachers if os.path.exists(os.path.join(run_dir, t[1]))]
    if os.path.exists(os.path.join(run_dir, "ensemble.keras")):
        files.append(("ensemble", "ensemble.keras"))
    return files


def keras_file_problem(path):
    """Why a `.keras` file cannot be loaded before trying (missing, or not a complete zip archive), or None."""
    if not os.path.exists(path):
        return "is missing"
    if not zipfile.is_zipfile(path):
        return f"is damaged (not a .keras zip archive; {os.path.getsize(path)} bytes: cut short?)"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        return f"is damaged ({type(error).__name__}: {error})"
    return f"is damaged (member {bad} fails its CRC check)" if bad else None


def evaluate_run(run_dir, batch_size=None, import_plugins=False):
    """Re-score a run's saved students (or branches), teacher peers and ensemble on its test split.

    Loads the `.keras` files with `keras.saving.load_model` (plain Keras models) and the test split from the saved
    config; writes `evaluation.json`. A missing or damaged model file is reported in its score (`"error"`) and in
    `"problems"`, and the other files are scored. When the ensemble cannot be scored (not saved, missing or
    damaged), `"peers_mean"` scores the mean of the deployed peers' probabilities instead, saying so.

    Args:
        run_dir: a run directory written by `run_experiment`.
        batch_size: test batch size (default: the config's), an integer >= 1.
        import_plugins: import the run's plugins (its config's `imports:`; this runs their code). Needed only when
            the run's dataset, or a layer of its saved models, is registered by a plugin; without it, such a run is
            refused (or its files reported as not loading) with a message saying so.

    Returns:
        `{"backend", "num_test_samples", "scores": {"student_0": {"accuracy", "loss", "file"}, ..., "teacher_0": ...,
        "ensemble": ..., "peers_mean": ...}, "problems": [...], "saved": path}` (accuracy a fraction; loss the mean
        cross-entropy; a file that could not be scored has `{"file", "error"}` instead; `saved` is None, and a problem
        says why, when a full or read-only disk kept `evaluation.json` from being written).

    Raises:
        ConfigError: the run's `config.yaml` is missing or does not read (nothing to evaluate against), or its
            dataset is registered by a plugin that `import_plugins` was not given to import.
        ValueError: `batch_size` is not an integer >= 1.

    Example:

    ```python
    evaluation = keras_okd.experiments.evaluate_run("runs/digits_simple_cnn/dml/seed_0")
    evaluation["scores"]["ensemble"]["accuracy"], evaluation["scores"]["student_0"]["accuracy"]
    evaluation["problems"]   # [] when every model file loaded
    ```
    """
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size: got {batch_size!r}; accepted: an integer >= 1 (None: the config's).")
    config = load_run_config(os.path.join(run_dir, CONFIG), import_plugins)
    plugins = config.get("imports") if not import_plugins else None
    if plugins and config["dataset"]["name"] not in keras_okd.data.names():
        raise ConfigError([f"{os.path.join(run_dir, CONFIG)}: dataset {config['dataset']['name']!r} is registered by "
                           f"this run's plugins ({', '.join(plugins)}), which are not imported: importing them runs "
                           "their code. Pass --import-plugins (import_plugins=True) for a run you trust."])
    problems = []
    results, problem = read_json(os.path.join(run_dir, RESULTS))
    if problem is None and not isinstance(results, dict):
        problem = f"{os.path.join(run_dir, RESULTS)} holds a {type(results).__name__}, not the results of a run"
    if problem:
        problems.append(f"{problem}; the run may be incomplete: scoring the model files present")
        results = None
    options = dict(config["dataset"])
    name = options.pop("name")
    if batch_size is not None:
        options["batch_size"] = batch_size
    _, test, _ = keras_okd.data.get(name, seed=config["seeds"][0], **options)
    labels = np.concatenate([np.asarray(y) for y in test.map(lambda x, y: y).as_numpy_iterator()]).astype("int64")
    images = test.map(lambda x, y: x)
    scores, probabilities = {}, {}
    for label, file in peer_files(run_dir, config, results):
        path = os.path.join(run_dir, file)
        problem = keras_file_problem(path)
        if problem is None:
            try:
                model = keras.saving.load_model(path)
            except Exception as error:  # report a file that does not load, score the others
                problem = f"does not load ({type(error).__name__}: {' '.join(str(error).split())[:300]})"
                if plugins:
                    problem += (f"; the run's plugins ({', '.join(plugins)}) are not imported: if a layer of it "
                                "comes from them, pass --import-plugins (it runs their code)")
        if problem:
            scores[label] = {"file": file, "error": problem}
            problems.append(f"{path} {problem}")
            continue
        outputs = np.asarray(model.predict(images, verbose=0)).astype("float64")
        probabilities[label] = outputs if _are_probabilities(outputs) else scipy.special.softmax(outputs, axis=-1)
        scores[label] = {**_score(probabilities[label], labels), "file": file}
    deployed_peers = [p for name, p in probabilities.items() if name.startswith("teacher_")] or [
        p for name, p in probabilities.items() if name.startswith("student_")]
    if deployed_peers:
        mean = np.mean(deployed_peers, axis=0)
        if "ensemble" in probabilities:
            scores["ensemble"]["matches_peers"] = bool(np.allclose(probabilities["ensemble"], mean, atol=1e-4))
        else:  # no usable ensemble file: score the mean of the deployed peers' probabilities, named as such
            scores["peers_mean"] = {**_score(mean, labels), "from": "mean of the deployed peers' probabilities"}
    result = {"backend": keras.backend.backend(), "num_test_samples": int(len(labels)), "scores": scores,
              "problems": problems}
    path = os.path.join(run_dir, "evaluation.json")
    try:
        atomic_json(path, result)
        result["saved"] = path
    except DiskError as error:  # the scores are computed: return them, saying they are not saved
        result["saved"] = None
        problems.append(f"{error}; the scores are not saved (they are printed)")
    return result


def _score(probabilities, labels):
    """Accuracy and mean cross-entropy of `(N, C)` probabilities (scikit-learn's `accuracy_score` and `log_loss`)."""
    from sklearn.metrics import accuracy_score, log_loss

    return {
        "accuracy": float(accuracy_score(labels, np.argmax(probabilities, axis=-1))),
        "loss": float(log_loss(labels, probabilities, labels=np.arange(probabilities.shape[-1]))),
    }


def _are_probabilities(x):
    return bool(x.min() >= 0.0 and np.allclose(x.sum(axis=-1), 1.0, atol=1e-3))


def run_dirs(config, run_dir=None, seeds=None, root="runs"):
    """`[(seed, directory)]` for a config: `run_dir` itself for one seed given a `run_dir`, else `seed_<s>`
    sub-directories of `run_dir` (default `runs/<experiment>/<method>`).

    Args:
        config: a resolved config (its `seeds`, `experiment` and method name are read).
        run_dir: the base directory (None: `<root>/<experiment>/<method>`).
        seeds: the seeds to run (None: the config's).
        root: the root of the default directory.

    Returns:
        A list of `(seed, directory)` pairs, in the seeds' order.

    Example:

    >>> from keras_okd.experiments import config_from_dict, run_dirs
    >>> config = config_from_dict({"experiment": "quick", "method": {"name": "dml"},
    ...                            "students": ["simple_cnn", "simple_cnn"], "dataset": {"name": "digits"},
    ...                            "optimizer": {"name": "sgd", "learning_rate": 0.05}, "epochs": 2, "seeds": [0, 1]})
    >>> run_dirs(config)
    [(0, 'runs/quick/dml/seed_0'), (1, 'runs/quick/dml/seed_1')]
    >>> run_dirs(config, "my_run", seeds=[3])   # one seed: the directory itself
    [(3, 'my_run')]
    """
    seeds = list(config["seeds"] if seeds is None else seeds)
    if run_dir is not None and len(seeds) == 1:
        return [(seeds[0], str(run_dir))]
    base = str(run_dir) if run_dir is not None else default_run_dir(config, root)
    return [(s, os.path.join(base, f"seed_{s}")) for s in seeds]
