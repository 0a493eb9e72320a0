"""Experiments: YAML configs of the papers' recipes, resumable runs, evaluation and reports.

* `load_config(path, overrides)`: read and check a config (schema in `keras_okd.experiments.config`); its
  `imports:` (plugin files or modules, `keras_okd.registry.load_plugin`) are imported first.
* `run_experiment(config, run_dir, seed)`: train one seed into a run directory, resuming an interrupted run.
* `evaluate_run(run_dir)`: re-score a run's saved `.keras` models on its test split.
* `make_report(paths, out_dir)`: the papers' table layout and training curves from run directories, with each
  method's paired difference to independent training over seeds and its 95% Student-t interval.
* `paired_difference(values, baseline)`, `t_quantile(p, df)` (`keras_okd.experiments.stats`): those intervals, in
  plain Python.
* `RunCheckpoint`, `RunLock` (`keras_okd.experiments.state`): the kill-safe backups and the one-owner lock of a run
  directory, usable with any `fit`.

The `keras-okd` command (`keras_okd.cli`) wraps them: `train --config`, `evaluate`, `report` (and `methods`).
"""

from keras_okd.experiments.config import ConfigError, config_from_dict, dump_config, load_config
from keras_okd.experiments.report import make_report
from keras_okd.experiments.runner import evaluate_run, read_history, run_dirs, run_experiment
from keras_okd.experiments.state import (
    ResumeMismatchError,
    RunCheckpoint,
    RunDirectoryError,
    RunLock,
    RunLockedError,
)
from keras_okd.experiments.stats import paired_difference, t_quantile

__all__ = [
    "ConfigError",
    "ResumeMismatchError",
    "RunCheckpoint",
    "RunDirectoryError",
    "RunLock",
    "RunLockedError",
    "config_from_dict",
    "dump_config",
    "evaluate_run",
    "load_config",
    "make_report",
    "paired_difference",
    "read_history",
    "run_dirs",
    "run_experiment",
    "t_quantile",
]
