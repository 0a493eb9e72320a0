"""Schedules of the knowledge parts' weights, applied by a Keras callback at the start of every epoch.

A schedule is a small serialisable function of the (0-based) epoch. `KnowledgeSchedule` holds, for each knowledge
part name, a list of schedules; at `on_epoch_begin` it sets that part's `schedule` variable to the product of their
values. Because the value lives in a variable, compiled train steps read it without retracing, and
`BackupAndRestore` / `save_weights` keep it.

Example:

>>> import keras_okd
>>> cb = keras_okd.callbacks.KnowledgeSchedule({"ta": [keras_okd.callbacks.WarmUp(20)]})
>>> [keras_okd.callbacks.WarmUp(20)(e) for e in (0, 19, 20)]
[0.0, 0.0, 1.0]
"""

import math

import keras
import numpy as np


class Schedule:
    """Base class: `schedule(epoch) -> float` with `get_config` / `from_config`."""

    def __call__(self, epoch):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()


@keras.saving.register_keras_serializable(package="keras_okd")
class WarmUp(Schedule):
    """0 for the first `epochs` epochs, then 1 (TSB zeroes its KD losses for the first 20 epochs).

    Args:
        epochs: number of epochs with weight 0.
    """

    def __init__(self, epochs):
        if int(epochs) < 0:
            raise ValueError(f"WarmUp: epochs must be >= 0, got {epochs}.")
        self.epochs = int(epochs)

    def __call__(self, epoch):
        return 0.0 if epoch < self.epochs else 1.0

    def get_config(self):
        return {"epochs": self.epochs}


@keras.saving.register_keras_serializable(package="keras_okd")
class RampUp(Schedule):
    """Sigmoid-shaped ramp-up `exp(-5 (1 - epoch / length)^2)` for `epoch < length`, then 1.

    This is the formula of the mean-teacher, ONE and OKDDip papers (length 80). The public DKEL and PCL code divide by
    the final weight instead of the length, which leaves every KD term near zero; keras-okd implements the intended
    formula.

    Args:
        length: number of epochs of the ramp.
    """

    def __init__(self, length=80):
        if int(length) < 1:
            raise ValueError(f"RampUp: length must be >= 1, got {length}.")
        self.length = int(length)

    def __call__(self, epoch):
        if epoch >= self.length:
            return 1.0
        return math.exp(-5.0 * (1.0 - epoch / self.length) ** 2)

    def get_config(self):
        return {"length": self.length}


@keras.saving.register_keras_serializable(package="keras_okd")
class Decay(Schedule):
    """A weight that decays with the epoch, or its complement `1 - decay` (DKEL's omega(e) and 1 - omega(e)).

    Shapes (DKEL Fig. 7): `"exponential"`: exp(-gamma * epoch); `"cosine"`: 0.5 cos(pi * epoch / total_epochs) + 0.5;
    `"linear"`: 1 - epoch / total_epochs.

    Args:
        shape: `"exponential"`, `"cosine"` or `"linear"`.
        gamma: decay rate of the exponential shape, > 0 (DKEL: 0.5).
        total_epochs: length E of the cosine and linear shapes.
        complement: return `1 - value` instead.
    """

    SHAPES = ("exponential", "cosine", "linear")

    def __init__(self, shape="exponential", gamma=0.5, total_epochs=None, complement=False):
        if shape not in self.SHAPES:
            raise ValueError(f"Decay: shape must be one of {self.SHAPES}, got {shape!r}.")
        if shape == "exponential" and not float(gamma) > 0:
            raise ValueError(f"Decay: gamma must be > 0, got {gamma}.")
        if shape != "exponential" and (total_epochs is None or int(total_epochs) < 1):
            raise ValueError(f"Decay: the {shape} shape needs total_epochs >= 1, got {total_epochs}.")
        self.shape, self.gamma, self.complement = shape, float(gamma), bool(complement)
        self.total_epochs = None if total_epochs is None else int(total_epochs)

    def __call__(self, epoch):
        if self.shape == "exponential":
            value = math.exp(-self.gamma * epoch)
        elif self.shape == "cosine":
            value = 0.5 * math.cos(math.pi * min(epoch, self.total_epochs) / self.total_epochs) + 0.5
        else:
            value = max(0.0, 1.0 - epoch / self.total_epochs)
        return 1.0 - value if self.complement else value

    def get_config(self):
        return {
            "shape": self.shape,
            "gamma": self.gamma,
            "total_epochs": self.total_epochs,
            "complement": self.complement,
        }


def serialize_schedules(schedules):
    """`{part: [Schedule]}` -> JSON-able config (used by `OnlineDistiller.get_config`)."""
    return {part: [keras.saving.serialize_keras_object(s) for s in items] for part, items in schedules.items()}


def deserialize_schedules(config):
    """Inverse of `serialize_schedules`; accepts already-built schedules too."""
    return {
        part: [s if isinstance(s, Schedule) else keras.saving.deserialize_keras_object(s) for s in items]
        for part, items in (config or {}).items()
    }


class KnowledgeSchedule(keras.callbacks.Callback):
    """Sets each knowledge part's `schedule` variable at the start of every epoch.

    Args:
        schedules: dict mapping a knowledge part's name to a list of `Schedule`s; the part's weight for an epoch is
            the product of their values.

    Example:

    >>> cb = KnowledgeSchedule({"ta": [WarmUp(20)], "si": [WarmUp(20)]})
    >>> cb.values(0), cb.values(20)
    ({'ta': 0.0, 'si': 0.0}, {'ta': 1.0, 'si': 1.0})
    """

    def __init__(self, schedules):
        super().__init__()
        self.schedules = deserialize_schedules(schedules)

    def values(self, epoch):
        """`{part name: weight}` for a 0-based `epoch`."""
        return {part: math.prod(s(epoch) for s in items) for part, items in self.schedules.items()}

    def on_epoch_begin(self, epoch, logs=None):
        parts = {part.name: part for part in self.model.knowledge}
        for name, value in self.values(epoch).items():
            if name not in parts:
                raise ValueError(
                    f"KnowledgeSchedule: no knowledge part named {name!r}; the model has {sorted(parts)}."
                )
            # a float32 array, not a Python float: JAX would retrace the train step for a weakly-typed scalar
            parts[name].schedule.assign(np.asarray(value, dtype="float32"))


def for_method(distiller):
    """The callbacks a preset's paper recipe needs (its schedules), to pass to `fit`.

    `OnlineDistiller.fit` adds them by itself when no `KnowledgeSchedule` is given, so this is for users who want to
    see, change or combine them.

    Args:
        distiller: an `OnlineDistiller`.

    Returns:
        A list of Keras callbacks.
    """
    return [KnowledgeSchedule(distiller.schedules)] if distiller.schedules else []
