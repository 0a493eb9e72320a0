"""The configs' learning-rate schedules (keras_okd.experiments.schedules) against numpy, their config checks, and a
run that validates every few epochs."""

import math

import keras
import numpy as np
import pytest

from keras_okd.experiments import ConfigError, config_from_dict, read_history, run_experiment
from keras_okd.experiments.schedules import LinearWarmUp, learning_rate, rate_at

BASE = {"experiment": "sched", "method": {"name": "dml"}, "students": ["simple_cnn_8", "simple_cnn_8"],
        "dataset": {"name": "digits", "batch_size": 500}, "optimizer": {"name": "sgd", "learning_rate": 0.1},
        "epochs": 4}


def numpy_rate(kind, step, base, epochs, spe, warmup_epochs=0.0, milestones=(), factor=0.1):
    """The module docstring's rule, written again: the schedule's rate, times the linear warm-up factor."""
    if kind == "step":
        rate = base * factor ** sum(step // spe >= m for m in milestones)
    elif kind == "cosine":
        rate = base * 0.5 * (1 + math.cos(math.pi * min(step, epochs * spe) / (epochs * spe)))
    else:
        rate = base
    warmup = round(warmup_epochs * spe)
    return rate * min(1.0, (step + 1) / warmup) if warmup >= 1 else rate


@pytest.mark.parametrize("schedule", [
    {"type": "constant", "warmup_epochs": 0.0},
    {"type": "constant", "warmup_epochs": 2.5},
    {"type": "cosine", "warmup_epochs": 0.0},
    {"type": "cosine", "warmup_epochs": 3.0},
    {"type": "step", "milestones": [4, 7], "factor": 0.2, "warmup_epochs": 1.0},
])
def test_every_step_rate_equals_numpy(schedule):
    epochs, spe, base = 10, 6, 0.05
    rate = learning_rate(schedule, base, epochs, spe)
    kwargs = {k: v for k, v in schedule.items() if k != "type"}
    expected = [numpy_rate(schedule["type"], s, base, epochs, spe, **kwargs) for s in range(epochs * spe)]
    np.testing.assert_allclose([rate_at(rate, s) for s in range(epochs * spe)], expected, rtol=2e-6, atol=1e-9)


def test_warm_up_starts_above_zero_and_a_constant_without_it_is_a_number():
    rate = learning_rate({"type": "cosine", "warmup_epochs": 1.0}, 0.1, 5, 4)
    assert isinstance(rate, LinearWarmUp) and rate_at(rate, 0) == pytest.approx(0.025)
    assert learning_rate({"type": "constant", "warmup_epochs": 0.0}, 0.1, 5, 4) == 0.1
    with pytest.raises(ValueError, match="steps_per_epoch must be an integer >= 1, got 0"):
        learning_rate({"type": "constant"}, 0.1, 5, 0)
    with pytest.raises(ValueError, match="warmup_steps must be an integer >= 1, got 0"):
        LinearWarmUp(0.1, 0)


def test_warm_up_round_trips_through_keras_serialization():
    rate = learning_rate({"type": "step", "milestones": [2], "factor": 0.1, "warmup_epochs": 1.0}, 0.1, 3, 2)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(rate))
    assert [rate_at(again, s) for s in range(6)] == [rate_at(rate, s) for s in range(6)]
    optimizer = keras.optimizers.SGD(learning_rate=rate)
    assert keras.optimizers.SGD.from_config(optimizer.get_config()).get_config()["learning_rate"]["config"][
        "warmup_steps"] == 2


def test_config_checks_of_the_schedule_and_validation_freq():
    resolved = config_from_dict({**BASE, "schedule": {"type": "cosine", "warmup_epochs": 2}})
    assert resolved["schedule"] == {"type": "cosine", "warmup_epochs": 2.0} and resolved["validation_freq"] == 1
    cases = [
        ({"schedule": {"type": "cosine", "warmup_epochs": -1}}, "schedule.warmup_epochs: must be >= 0"),
        ({"schedule": {"type": "cosine", "milestones": [2]}}, "milestones"),
        ({"schedule": {"type": "linear"}}, "unknown schedule 'linear'; known: step, cosine, constant"),
        ({"validation_freq": 0}, "validation_freq: must be >= 1"),
        ({"validation_freq": 3}, "validation_freq: 3 does not divide epochs: 4"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({**BASE, **change})


@pytest.mark.heavy
def test_a_run_that_validates_every_second_epoch_scores_its_last(tmp_path):
    config = config_from_dict({**BASE, "validation_freq": 2, "schedule": {"type": "cosine", "warmup_epochs": 1}})
    results = run_experiment(config, tmp_path / "run", 0, verbose=0)
    rows = read_history(tmp_path / "run" / "history.csv")
    assert [isinstance(row["val_ensemble_accuracy"], float) for row in rows] == [False, True, False, True]
    assert results["ensemble_accuracy"] == rows[-1]["val_ensemble_accuracy"]
