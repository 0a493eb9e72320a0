"""Learning-rate schedules of experiment configs, as Keras `LearningRateSchedule`s of the optimizer's step.

A config's `schedule` section names one of Keras's schedules, set on the optimizer so that the rate follows
`optimizer.iterations`, which every backup saves (a resumed run continues the schedule exactly):

* `{type: constant}`: the optimizer's `learning_rate` throughout;
* `{type: step, milestones: [150, 180, 210], factor: 0.1}`: `keras.optimizers.schedules.PiecewiseConstantDecay`,
  the rate times `factor` from each milestone epoch on (PyTorch's `MultiStepLR` stepped once per epoch: from the
  151st epoch, index 150);
* `{type: cosine}`: `keras.optimizers.schedules.CosineDecay` from the rate to 0 over all the run's steps.

Each takes `warmup_epochs` (default 0): a linear warm-up of the rate over the first `warmup_epochs * steps_per_epoch`
steps (rounded; fractions of an epoch allowed), the rate of step s multiplied by `(s + 1) / warmup_steps` (PyTorch's
`LinearLR` with `start_factor = 1 / warmup_steps`, stepped per batch): the first step runs at `rate / warmup_steps`,
never at 0. Keras has warm-up built into `CosineDecay` only (from an initial rate, the first step at that rate), so
`LinearWarmUp` wraps any schedule with the same ramp.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_okd")
class LinearWarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """A linear learning-rate warm-up in front of another schedule: step s (0-based) runs at
    `after(s) * min(1, (s + 1) / warmup_steps)`.

    Args:
        after: the schedule after the warm-up (a `LearningRateSchedule`, or a number for a constant rate), evaluated
            at the optimizer's own step (not shifted by the warm-up).
        warmup_steps: steps of the ramp, >= 1.

    Example:

    >>> import keras
    >>> from keras_okd.experiments.schedules import LinearWarmUp
    >>> schedule = LinearWarmUp(0.1, warmup_steps=4)
    >>> [round(float(schedule(step)), 4) for step in range(6)]
    [0.025, 0.05, 0.075, 0.1, 0.1, 0.1]
    >>> optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)   # as any Keras schedule
    """

    def __init__(self, after, warmup_steps):
        if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 1:
            raise ValueError(f"warmup_steps must be an integer >= 1, got {warmup_steps!r}.")
        self.after = after
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rate = self.after(step) if callable(self.after) else self.after
        return ops.cast(rate, "float32") * ops.minimum(1.0, (step + 1.0) / float(self.warmup_steps))

    def get_config(self):
        after = self.after
        if isinstance(after, keras.optimizers.schedules.LearningRateSchedule):
            after = keras.optimizers.schedules.serialize(after)
        return {"after": after, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["after"], dict):
            config["after"] = keras.optimizers.schedules.deserialize(config["after"])
        return cls(**config)


def learning_rate(schedule, base_rate, epochs, steps_per_epoch):
    """The optimizer's `learning_rate` for a resolved config `schedule` section: a number (constant, no warm-up) or
    a Keras `LearningRateSchedule` of the step (see the module docstring).

    Args:
        schedule: `{type: constant|step|cosine, milestones, factor, warmup_epochs}` (resolved: every key present
            for its type).
        base_rate: the optimizer's configured `learning_rate`.
        epochs: the run's epochs (the cosine's length).
        steps_per_epoch: training steps (batches) per epoch, >= 1.

    Example:

    >>> from keras_okd.experiments.schedules import learning_rate
    >>> rate = learning_rate({"type": "step", "milestones": [2], "factor": 0.1, "warmup_epochs": 1}, 0.1,
    ...                      epochs=3, steps_per_epoch=2)
    >>> [round(float(rate(step)), 4) for step in range(6)]     # warm-up over epoch 0, x0.1 from epoch 2
    [0.05, 0.1, 0.1, 0.1, 0.01, 0.01]
    """
    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}.")
    kind = schedule.get("type", "constant")
    base_rate = float(base_rate)
    if kind == "step":
        boundaries = [m * steps_per_epoch - 1 for m in schedule["milestones"]]  # step m * spe is epoch m's first
        values = [base_rate * schedule["factor"] ** i for i in range(len(boundaries) + 1)]
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values) if boundaries else base_rate
    elif kind == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(base_rate, decay_steps=max(1, epochs * steps_per_epoch))
    elif kind == "constant":
        rate = base_rate
    else:
        raise ValueError(f"unknown schedule type {kind!r}; known: constant, step, cosine.")
    warmup_steps = round(float(schedule.get("warmup_epochs", 0) or 0) * steps_per_epoch)
    return LinearWarmUp(rate, warmup_steps) if warmup_steps >= 1 else rate


def rate_at(rate, step):
    """The learning rate (a float) that `learning_rate`'s result gives at optimizer step `step`.

    Example:

    >>> from keras_okd.experiments.schedules import learning_rate, rate_at
    >>> round(rate_at(learning_rate({"type": "cosine", "warmup_epochs": 0}, 0.1, epochs=2, steps_per_epoch=5), 5), 6)
    0.05
    """
    value = rate(step) if callable(rate) else rate
    return float(ops.convert_to_numpy(value))
