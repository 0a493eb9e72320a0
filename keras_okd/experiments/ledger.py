"""The results ledger: one small JSON record per finished run (one config, one seed), committed with the code.

A run directory holds the models and the full logs and is not committed; its record is a few KB and is. A record
(`<ledger>/<tag>/<method>-<hash>-seed<s>-<backend>.record.json`) holds:

    ledger              the record format (1)
    tag                 the campaign's name for the regime (a plan entry's tag, or the run's experiment)
    config              the run's resolved config (its `seeds` is the run's seed)
    config_hash         SHA-256 (16 hex digits) of that config without `seeds`: the seeds of one setting share it
    experiment, method, students, dataset, seed, epochs
    backend, versions   the Keras backend, and the versions of Python, Keras, numpy and that backend's engine
    commit              the git commit of the code that trained it ("+dirty" when the work tree had changes)
    net_accuracy        each deployed network's test accuracy after the last epoch, and ensemble_accuracy
    train               the last epoch's training accuracy of each network and of the ensemble, loss, each CE
    seconds, cpu_seconds    training wall seconds (all sessions) and this process's CPU seconds, when known
    history             the logs of every validated epoch (all keys, 6 significant digits)
    produced_by, date   what trained it, and when the record was written (UTC)

`keras-okd report` reads records as it reads run directories (same table, same paired intervals), so a campaign's
ledger is its evidence; `keras-okd ledger add RUN_DIR...` records finished runs of `keras-okd train`; `keras-okd
ledger table PATH` prints the table and `keras-okd ledger readme README.md` rewrites the README's tables from the
records (both in `keras_okd.experiments.readme_tables`, above this module and the report); `keras-okd ledger rerun
RECORD` trains the record's config and seed again and says whether the accuracies reproduce within a tolerance.
"""

import datetime
import hashlib
import json
import os
import platform
import subprocess

from keras_okd.experiments.state import atomic_json, read_json

FORMAT = 1
SUFFIX = ".record.json"


class LedgerError(ValueError):
    """A record that does not read, a run that cannot be recorded, or a README marker naming no records."""


def config_hash(config):
    """SHA-256 (first 16 hex digits) of a resolved config without its `seeds`: every seed of one setting shares it.

    Example:

    >>> from keras_okd.experiments.ledger import config_hash
    >>> a = {"experiment": "e", "epochs": 3, "seeds": [0]}
    >>> config_hash(a) == config_hash({**a, "seeds": [4]}), config_hash(a) == config_hash({**a, "epochs": 4})
    (True, False)
    """
    text = json.dumps({k: v for k, v in config.items() if k != "seeds"}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _round(value, digits=6):
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    return value


def versions(backend=None):
    """`{"python", "keras", "numpy", <engine>}` of this process (the engine of `backend`, default Keras's)."""
    import keras
    import numpy

    backend = backend or keras.backend.backend()
    found = {"python": platform.python_version(), "keras": keras.__version__, "numpy": numpy.__version__}
    try:
        module = __import__(backend)
        found[backend] = getattr(module, "__version__", "?")
    except ImportError:
        pass
    return found


def git_commit(path=None):
    """The checkout's commit (`+dirty` when tracked files differ from it), or None outside a git checkout."""
    where = path or os.path.dirname(os.path.abspath(__file__))

    def git(*args):
        return subprocess.run(["git", "-C", where, *args], capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def make_record(config, results, history, tag=None, produced_by="keras-okd train", cpu_seconds=None, commit=None):
    """The ledger record of a finished run.

    Args:
        config: the run's resolved config (one seed).
        results: its `results.json` (`keras_okd.experiments.runner.run_results`).
        history: its `history.csv` rows (`read_history`).
        tag: the regime's name (default: the config's experiment).
        produced_by: what trained it.
        cpu_seconds: the training process's CPU seconds, when measured (else `results["cpu_seconds"]`, if any).
        commit: the code's git commit (default: `results["commit"]`, which the trainer records when it starts,
            else this checkout's now, `git_commit()`).

    Example:

    ```python
    config = keras_okd.experiments.load_config("runs/digits_simple_cnn/dml/seed_0/config.yaml")
    results = json.load(open("runs/digits_simple_cnn/dml/seed_0/results.json"))
    history = keras_okd.experiments.read_history("runs/digits_simple_cnn/dml/seed_0/history.csv")
    record = make_record(config, results, history, tag="digits")
    ```
    """
    final = history[-1] if history else {}
    peers = len(results.get("net_accuracy") or [])
    peer = "branch" if "branch_0_accuracy" in final else "student"
    validated = [{k: _round(v) for k, v in row.items() if not isinstance(v, str)} for row in history
                 if isinstance(row.get("val_ensemble_accuracy", row.get("val_teacher_ensemble_accuracy")), float)]
    return {
        "ledger": FORMAT,
        "tag": tag or config["experiment"],
        "experiment": config["experiment"],
        "method": config["method"]["name"],
        "students": config["students"],
        "dataset": config["dataset"],
        "seed": results["seed"],
        "epochs": results.get("epochs", len(history)),
        "backend": results["backend"],
        "versions": versions(results["backend"]),
        "commit": commit or results.get("commit") or git_commit(),
        "deploy": results.get("deploy", "students"),
        "net_accuracy": [_round(a) for a in results["net_accuracy"]],
        "ensemble_accuracy": _round(results["ensemble_accuracy"]),
        "train": {
            "net_accuracy": [_round(final.get(f"{peer}_{i}_accuracy")) for i in range(peers)],
            "ensemble_accuracy": _round(final.get("ensemble_accuracy")),
            "loss": _round(final.get("loss")),
            "ce": [_round(final.get(f"{peer}_{i}_ce")) for i in range(peers)],
        },
        "seconds": results.get("seconds"),
        "cpu_seconds": cpu_seconds if cpu_seconds is not None else results.get("cpu_seconds"),
        "produced_by": results.get("produced_by", produced_by),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config_hash": config_hash(config),
        "config": config,
        "history": validated,
    }


def record_path(ledger_dir, record):
    """Where `record` lives under `ledger_dir`: `<tag>/<method>-<hash>-seed<s>-<backend>.record.json`."""
    name = f"{record['method']}-{record['config_hash']}-seed{record['seed']}-{record['backend']}{SUFFIX}"
    return os.path.join(str(ledger_dir), record["tag"], name)


def write_record(ledger_dir, record):
    """Write `record` (atomically) under `ledger_dir`; returns its path."""
    path = record_path(ledger_dir, record)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_json(path, record)
    return path


def has_record(ledger_dir, tag, config, backend):
    """Whether `ledger_dir` already holds the record of this (tag, resolved one-seed config, backend): a campaign
    skips such a run."""
    seed = config["seeds"][0]
    probe = {"tag": tag, "method": config["method"]["name"], "config_hash": config_hash(config), "seed": seed,
             "backend": backend}
    return os.path.exists(record_path(ledger_dir, probe))


def read_record(path):
    """A record as a dict.

    Raises:
        LedgerError: the file does not read as a record of this format, naming the file and what is wrong.
    """
    record, problem = read_json(path)
    if problem:
        raise LedgerError(problem)
    if not isinstance(record, dict) or record.get("ledger") != FORMAT:
        raise LedgerError(f"{path}: not a keras-okd ledger record of format {FORMAT} (its `ledger` key is "
                          f"{record.get('ledger') if isinstance(record, dict) else None!r}).")
    missing = [k for k in ("config", "seed", "net_accuracy", "ensemble_accuracy", "history") if k not in record]
    if missing:
        raise LedgerError(f"{path}: a record without {', '.join(missing)}.")
    return record


def find_records(paths):
    """Record files at or below `paths` (files or directories), sorted."""
    found = []
    for path in map(str, paths):
        if os.path.isfile(path) and path.endswith(SUFFIX):
            found.append(path)
        for root, dirs, files in os.walk(path):
            dirs.sort()
            found += [os.path.join(root, f) for f in sorted(files) if f.endswith(SUFFIX)]
    return sorted(set(os.path.normpath(p) for p in found))


def record_run_dir(run_dir, ledger_dir, tag=None, commit=None):
    """Write the record of a finished run directory (`results.json` present) under `ledger_dir`; returns its path.
    `commit`: the code's commit when `results.json` does not name it (default: this checkout's now).

    Raises:
        LedgerError: the run has not finished, or its files do not read.
    """
    from keras_okd.experiments.config import ConfigError, load_config
    from keras_okd.experiments.runner import CONFIG, HISTORY, RESULTS, read_history

    results, problem = read_json(os.path.join(run_dir, RESULTS))
    if problem or not isinstance(results, dict):
        raise LedgerError(f"{run_dir}: not a finished run ({problem or 'results.json holds no results'}); "
                          "only finished runs enter the ledger.")
    try:
        config = load_config(os.path.join(run_dir, CONFIG), check_params=False)
    except ConfigError as error:
        raise LedgerError(f"{run_dir}: its {CONFIG} does not read: {error}") from None
    history = read_history(os.path.join(run_dir, HISTORY))
    return write_record(ledger_dir, make_record(config, results, history, tag=tag or results.get("tag"),
                                                commit=results.get("commit") or commit))


def compare(record, again, tolerance):
    """`(reproduced, lines)`: whether every network's and the ensemble's accuracy of `again` (a record of the same
    config and seed) is within `tolerance` (accuracy points, 0-100 scale) of `record`'s, and one line per value."""
    lines, ok = [], True
    names = [f"net {i}" for i in range(len(record["net_accuracy"]))] + ["ensemble"]
    for name, a, b in zip(names, record["net_accuracy"] + [record["ensemble_accuracy"]],
                          again["net_accuracy"] + [again["ensemble_accuracy"]]):
        diff = 100 * (b - a)
        ok &= abs(diff) <= tolerance + 1e-9  # the float error of the subtraction
        lines.append(f"{name}: recorded {100 * a:.2f}, now {100 * b:.2f} ({diff:+.2f} points)")
    return ok, lines
