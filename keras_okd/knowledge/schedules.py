"""Schedules of the knowledge parts' weights: small serialisable functions of the (0-based) epoch.

A part owns its schedules (`KnowledgePart(schedule=...)`: one `Schedule`, or a list whose values multiply); at the
start of every epoch `keras_okd.distiller.callbacks.KnowledgeSchedule` sets the part's `schedule` variable to their
product, which the distiller multiplies into the part's weight. Because the value lives in a variable, compiled train
steps read it without retracing, and `BackupAndRestore` / `save_weights` keep it.

Example:

>>> from keras_okd.knowledge import TemporalAccumulator
>>> part = TemporalAccumulator(num_samples=1000, schedule=WarmUp(20))   # TSB's KD warm-up, owned by the part
>>> part.schedules, [part.schedule_value(e) for e in (0, 19, 20)]
((WarmUp(epochs=20),), [0.0, 0.0, 1.0])
"""

import math

import keras


class Schedule:
    """Base class: `schedule(epoch) -> float` with `get_config` / `from_config`.

    A subclass implements `__call__(epoch)` (0-based epoch, returns the weight factor) and, when it takes arguments,
    `get_config`; register it with `keras.saving.register_keras_serializable` so that a saved distiller restores it.

    Example:

    >>> import keras
    >>> @keras.saving.register_keras_serializable(package="my_schedules")
    ... class Halve(Schedule):
    ...     def __init__(self, every=10):
    ...         self.every = every
    ...     def __call__(self, epoch):
    ...         return 0.5 ** (epoch // self.every)
    ...     def get_config(self):
    ...         return {"every": self.every}
    >>> halve = Halve(every=2)
    >>> [halve(e) for e in range(5)], halve
    ([1.0, 1.0, 0.5, 0.5, 0.25], Halve(every=2))
    >>> Halve.from_config(halve.get_config()) == halve
    True
    """

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

    Raises:
        ValueError: `epochs` is negative.

    Example:

    >>> warmup = WarmUp(2)
    >>> [warmup(e) for e in range(4)]
    [0.0, 0.0, 1.0, 1.0]
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

    Raises:
        ValueError: `length` is below 1.

    Example:

    >>> rampup = RampUp(4)
    >>> [round(rampup(e), 4) for e in range(5)]
    [0.0067, 0.0601, 0.2865, 0.7316, 1.0]
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
    `"linear"`: 1 - epoch / total_epochs. These are Keras's `ExponentialDecay(1, 1, exp(-gamma))`,
    `CosineDecay(1, total_epochs)` and `PolynomialDecay(1, total_epochs, 0)` of the epoch (tests/test_callbacks.py
    checks each against them); they stay closed forms in Python here because a Keras schedule computes a backend
    tensor in float32 (one device call per epoch and part, and 0.49999997 for CosineDecay(1, 2)(1), where this gives
    0.5), where a schedule of the epoch needs one Python float.

    Args:
        shape: `"exponential"`, `"cosine"` or `"linear"`.
        gamma: decay rate of the exponential shape, > 0 (DKEL: 0.5).
        total_epochs: length E of the cosine and linear shapes.
        complement: return `1 - value` instead.

    Raises:
        ValueError: unknown `shape`, `gamma <= 0` for the exponential shape, or no `total_epochs >= 1` for the
            cosine and linear shapes.

    Example:

    >>> round(Decay("exponential", gamma=0.5)(2), 4)
    0.3679
    >>> [Decay("linear", total_epochs=4)(e) for e in range(5)]
    [1.0, 0.75, 0.5, 0.25, 0.0]
    >>> [Decay("cosine", total_epochs=2, complement=True)(e) for e in range(3)]
    [0.0, 0.5, 1.0]
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


def schedule_list(schedule, owner):
    """`schedule` as a tuple of `Schedule`s: None (no schedule), one `Schedule` or a list of them (their values
    multiply), each possibly in its Keras-serialised form (a saved part's config).

    Args:
        schedule: None, a `Schedule`, or a list of `Schedule`s or of their `keras.saving.serialize_keras_object`s.
        owner: who is given it, for the error message.

    Raises:
        TypeError: anything but `Schedule`s.

    Example:

    >>> schedule_list(WarmUp(2), "ta"), schedule_list([RampUp(80), WarmUp(1)], "dk"), schedule_list(None, "x")
    ((WarmUp(epochs=2),), (RampUp(length=80), WarmUp(epochs=1)), ())
    >>> schedule_list([keras.saving.serialize_keras_object(WarmUp(20))], "ta")
    (WarmUp(epochs=20),)
    """
    if schedule is None:
        return ()
    items = [schedule] if isinstance(schedule, (Schedule, dict)) else schedule
    if isinstance(items, (list, tuple)):
        items = [keras.saving.deserialize_keras_object(s) if isinstance(s, dict) else s for s in items]
    if not isinstance(items, (list, tuple)) or not all(isinstance(s, Schedule) for s in items):
        raise TypeError(f"{owner}: schedule must be a keras_okd.knowledge.schedules.Schedule (WarmUp, RampUp, Decay), "
                        f"a list of them (their values multiply) or None, got {schedule!r}.")
    return tuple(items)


def deserialize_schedules(config):
    """`{part name: [Schedule, ...]}` from a dict whose schedules may be Keras-serialised (the `schedules` of a
    distiller saved before the parts owned their schedules, or a `KnowledgeSchedule`'s).

    Example:

    >>> deserialize_schedules({"ta": [WarmUp(20), keras.saving.serialize_keras_object(RampUp(80))]})
    {'ta': [WarmUp(epochs=20), RampUp(length=80)]}
    >>> deserialize_schedules(None)
    {}
    """
    return {part: list(schedule_list(items, f"schedules[{part!r}]")) for part, items in (config or {}).items()}


def schedule_product(schedules, epoch):
    """The product of `schedules`' values at a 0-based `epoch` (1.0 for none).

    Example:

    >>> schedule_product([RampUp(10), Decay(gamma=1.0)], 5) == RampUp(10)(5) * Decay(gamma=1.0)(5)
    True
    """
    return math.prod((s(epoch) for s in schedules), start=1.0)
