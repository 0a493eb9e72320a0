"""Keeping the distiller's state safe: non-finite steps change nothing, and failed calls leave it usable.

A training step whose loss is not finite (a NaN from diverging weights, say) must change nothing:
- the optimizer update is skipped (the distiller compiles its optimizer inside Keras's `LossScaleOptimizer`, at a fixed
  scale of 1 unless `mixed_float16` asks for dynamic scaling, which skips steps with non-finite gradients);
- the knowledge parts commit their state (the temporal accumulator's bank) only when the loss is finite;
- the mean teacher is owed no update;
- the students' non-trainable state that the forward pass moved (batch-norm moving statistics) is put back:
  `snapshot` reads it before the forward pass and `restore_unless` writes the old values back when not finite.
A step whose loss is finite but whose forward pass made that state non-finite (finite inputs of huge magnitude: a
batch scaled by 1e30 overflows a moving variance to inf, while the normalized outputs, and so the loss, stay finite)
is refused the same way: `unless_state_finite` makes its loss (and so its gradients) NaN, so the whole step changes
nothing and `Guard` raises, instead of leaving students that predict one class.
Then `Guard` raises `FloatingPointError` naming the non-finite logs (or, with `keras.callbacks.TerminateOnNaN` among
the callbacks, lets Keras stop quietly). Inputs with non-finite values never get that far:
`keras_okd.distiller.inputs` refuses them before the step.

`Guard` also records the JAX state at the start of fit and evaluate, so that a failure in the very first step leaves
the variables attached (see `keras_okd.backend.keep_state_for_errors`).
"""

import logging
import math

import keras
from keras import ops

from keras_okd import backend


def skipping_nonfinite(optimizer):
    """`optimizer` inside Keras's `LossScaleOptimizer`, so that a step with non-finite gradients changes no weights:
    at a fixed scale of 1 (a no-op otherwise), or with dynamic scaling under `mixed_float16`.

    Raises:
        ValueError: a negative constant learning rate (zero freezes the weights, which probes use).
    """
    rate = getattr(optimizer, "_learning_rate", None)
    if isinstance(rate, (int, float)) or (hasattr(rate, "shape") and not callable(rate)):
        try:
            value = float(rate)  # not convert_to_numpy: np.array() of a Variable warns (numpy 2's copy keyword)
        except TypeError:  # a tf.distribute MirroredVariable inside: float() does not take it, numpy does
            value = float(ops.convert_to_numpy(rate))
        if not value >= 0:
            raise ValueError(f"The optimizer's learning_rate must be >= 0, got {value}: a negative rate climbs the "
                             "loss instead of descending it.")
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    if keras.config.dtype_policy().name == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=1.0, dynamic_growth_steps=2**30)


def check_state_size(distiller, verbose):
    """Before training: log the size of the per-sample knowledge state once, and refuse state the device cannot
    hold (`MemoryError` naming the size and the options)."""
    nbytes = distiller.state_bytes()
    message = f"keras_okd: per-sample knowledge state (bank and visit counts) holds {nbytes:,} bytes."
    logging.getLogger("keras_okd").info(message)
    if verbose != 0 and not getattr(distiller, "_state_size_logged", False):
        print(message)
        distiller._state_size_logged = True
    backend.check_state_fits(nbytes, f"The per-sample knowledge state of {distiller.name!r}")


def moving_state(networks):
    """The float non-trainable variables of `networks` that a training forward pass updates (batch-norm moving
    statistics and the like): those of trainable layers. A frozen layer's weights (`trainable=False`) are read by the
    step, never written, and writing them back would break PyTorch's autograd (an in-place change of a saved tensor)."""
    frozen = {id(v) for n in networks for layer in n._flatten_layers(include_self=False)
              if not layer.trainable for v in layer.variables}
    return [v for n in networks for v in n.non_trainable_variables if "float" in str(v.dtype) and id(v) not in frozen]


def snapshot(variables):
    """Copies of `variables`' current values (taken before the forward pass)."""
    return [ops.copy(v.value) for v in variables]


def unless_state_finite(total, variables):
    """`total` where every value of `variables` (the moving state after the forward pass) is finite, else NaN;
    multiplied, so the gradients turn NaN too and the optimizer skips the step.

    Args:
        total: the step's scalar loss.
        variables: `moving_state(students)`.

    Example:

    >>> import keras
    >>> from keras import ops
    >>> from keras_okd.distiller.safety import unless_state_finite
    >>> moving = keras.Variable([1.0, float("inf")])
    >>> float(unless_state_finite(ops.convert_to_tensor(2.0), [moving]))
    nan
    """
    if not variables:
        return total
    finite = ops.all(ops.stack([ops.all(ops.isfinite(v.value)) for v in variables]))
    return total * ops.where(finite, ops.ones((), total.dtype), ops.full((), float("nan"), total.dtype))


def restore_unless(finite, variables, before):
    """Write `before` back into `variables` unless `finite` (a boolean scalar tensor) is True."""
    for variable, old in zip(variables, before):
        variable.assign(ops.where(finite, variable.value, old))


class Guard(keras.callbacks.Callback):
    """Keeps the distiller's state safe around `fit`/`evaluate`, and raises FloatingPointError after a batch whose loss
    was not finite (everything that step would have changed was left as it was).

    Args:
        raise_on_nonfinite: raise after a non-finite batch (False when `TerminateOnNaN` handles it).
    """

    def __init__(self, raise_on_nonfinite):
        super().__init__()
        self.raise_on_nonfinite = raise_on_nonfinite

    def on_train_begin(self, logs=None):
        backend.keep_state_for_errors(self.model)

    def on_test_begin(self, logs=None):
        self.model.sync_teacher()
        backend.keep_state_for_errors(self.model, optimizer=False)

    def on_train_end(self, logs=None):
        self.model.sync_teacher()

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        if not self.raise_on_nonfinite:
            return
        loss = logs.get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        bad = sorted(k for k, v in logs.items() if _is_number(v) and not math.isfinite(float(v)))
        raise FloatingPointError(
            f"Non-finite loss at batch {batch}: non-finite logs {bad}. The step changed nothing (weights, optimizer, "
            "knowledge state, teacher and batch-norm statistics are as they were before this batch). A loss is also "
            "made non-finite when the batch turned a student's batch-norm statistics non-finite (inputs of huge "
            "magnitude: check their scale). Lower the learning rate, clip gradients (optimizer clipnorm=...), or "
            "check the inputs; pass "
            "keras.callbacks.TerminateOnNaN() to stop training quietly instead of raising."
        )


def _is_number(value):
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False
