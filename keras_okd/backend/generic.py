"""What every engine shares, in `keras.ops`, and the defaults an engine module overrides (see `keras_okd.backend`)."""

import contextlib
import os
import threading

import numpy as np
from keras import ops

__all__ = [
    "scatter_rows", "gather_rows", "bank_storage_dtype", "to_storage", "from_storage", "lerp_variables",
    "scale_loss_for_replicas", "strategy_scope_of", "first_replica_batch", "logs_for_replicas", "strategy",
    "process", "initialize_processes", "num_replicas", "replica_values", "process_inputs", "jax_process_count",
    "device_memory", "check_state_fits", "synchronized_batch_norm_supported", "torch_parameters_by_position",
    "keep_state_for_errors", "reattach_state", "usable_after_errors", "unrolled_gradient", "compiled", "attach_state",
    "train_step_after", "step_value",
]

# Which engine each strategy name needs (`keras_okd.distribute.STRATEGIES` lists the names).
STRATEGY_ENGINES = {"none": None, "mirrored": "tensorflow", "multi_worker": "tensorflow", "jax_data_parallel": "jax"}


def scatter_rows(variable, indices, rows):
    """Write `rows` into `variable[indices]` along axis 0 (in place where the engine allows).

    Args:
        variable: a `keras.Variable` of shape `(N, ...)`.
        indices: integer tensor `(batch,)`, unique within the batch, each in `[0, N)`.
        rows: tensor `(batch, ...)` matching `variable.shape[1:]`.
    """
    rows = ops.stop_gradient(ops.cast(rows, variable.dtype))
    variable.assign(ops.scatter_update(variable.value, ops.expand_dims(ops.cast(indices, "int32"), -1), rows))


def gather_rows(variable, indices):
    """`variable[indices]` along axis 0, reading only those rows: O(batch x row size), whatever N is."""
    return ops.take(variable.value, indices, axis=0)


def bank_storage_dtype(dtype):
    """The dtype a bank of `dtype` is stored in (`dtype` itself except where an engine says otherwise)."""
    import keras

    return keras.backend.standardize_dtype(dtype)


def to_storage(values, dtype):
    """`values` rounded to `dtype`, in the representation `bank_storage_dtype(dtype)` stores."""
    return ops.cast(values, dtype)


def from_storage(values, dtype):
    """The `dtype` values that `values`, read from a bank stored as `bank_storage_dtype(dtype)`, represent."""
    return values


def lerp_variables(targets, sources, amount):
    """`t <- t + amount * (s - t)` for every pair of variables (the mean teacher's EMA), `amount` a scalar tensor.

    One assign per variable: inside a compiled step (tf.function, jax.jit) the engine fuses them.
    """
    for t, s in zip(targets, sources):
        t.assign(t + ops.cast(amount, t.dtype) * (ops.stop_gradient(ops.cast(s, t.dtype)) - t))


def unrolled_gradient(step_losses, final_loss, theta, phi, update):
    """The gradient of `final_loss(theta_K, phi)` with respect to `phi`, back through K differentiable steps.

    `theta_{k+1}, carry_{k+1} = update(theta_k, grad_theta step_losses[k](theta_k, phi), carry_k, k)` from
    `theta_0 = theta`, `carry_0 = None`, K = `len(step_losses)`: a look-ahead of an optimizer on `theta` (lists of
    tensors), differentiated as a whole (second order: the gradient of each step's gradient). Losses and `update` are
    functions of tensors written in `keras.ops`; only the differentiation is the engine's. L-MCL's meta-optimised
    layer-pair weights use it (`keras_okd.knowledge.features.lmcl`).

    Returns:
        A list of tensors shaped like `phi` (zeros where `final_loss` does not depend on a tensor).
    """
    import keras

    raise NotImplementedError(f"unrolled_gradient needs the TensorFlow, JAX or PyTorch backend, not "
                              f"{keras.backend.backend()!r}.")


def compiled(function):
    """`function` compiled by the engine (`jax.jit`, `tf.function`; as it is on PyTorch): a pure function of tensors,
    traced on its first call and on each new input shape."""
    return function


def attach_state(model):
    """Make a model's variables hold the trainer's current values between two steps of `fit`, so that a callback
    may read and assign them (JAX: Keras keeps them as jitted state during an epoch; a no-op elsewhere)."""


def scale_loss_for_replicas(loss):
    """Divide a replica's loss by the number of replicas in sync (TensorFlow strategies; identity elsewhere)."""
    return loss


def strategy_scope_of(model):
    """The scope of the strategy `model` was built under (TensorFlow), else a no-op context."""
    return contextlib.nullcontext()


def first_replica_batch(strategy, iterator):
    """TensorFlow only: the first batch of a distributed epoch iterator, one replica's share."""
    raise NotImplementedError("first_replica_batch is used by Keras's TensorFlow trainer only.")


def logs_for_replicas(logs):
    """Step logs as the trainer's cross-worker reduction needs them (identity except under TF multi-worker)."""
    return logs


def strategy(name):
    """The context manager that distributes what is built, compiled and fitted inside it for strategy `name`."""
    if name != "none":
        raise ValueError(_wrong_engine(name))
    return contextlib.nullcontext()


def process(name):
    """`(index, count)` of this process among those training together under strategy `name`."""
    return 0, 1


def initialize_processes():
    """Join the other processes of a multi-process run (JAX); nothing elsewhere."""


def num_replicas():
    """How many replicas the current strategy or distribution runs (1 without one)."""
    return 1


def replica_values(variable):
    """Every local replica's copy of `variable` as numpy arrays (one array without replicas)."""
    value = variable.value if hasattr(variable, "value") else variable
    return [np.asarray(ops.convert_to_numpy(value))]


@contextlib.contextmanager
def process_inputs(train=None, evaluation=None):
    """Yield `(train, evaluation)` as each process must feed them (unchanged except under JAX processes)."""
    yield train, evaluation


def jax_process_count():
    """How many JAX processes train together (1 on other engines)."""
    return 1


def device_memory():
    """`(total_bytes, description)` of the memory that holds the model's variables: the host's RAM unless an engine
    reports an accelerator; `(None, description)` when it cannot be told."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host memory (RAM)"
    except (ValueError, OSError, AttributeError):
        return None, "host memory (RAM)"


def check_state_fits(nbytes, what):
    """Raise `MemoryError` naming the size and the options when `nbytes` of state cannot fit in `device_memory()`."""
    import keras_okd.backend as backend

    total, where = backend.device_memory()
    if total is None or nbytes <= total:
        return
    raise MemoryError(
        f"{what} needs {nbytes:,} bytes ({nbytes / 2**30:.2f} GiB) but {where} holds {total:,} bytes "
        f"({total / 2**30:.2f} GiB). Options: a reduced-precision bank (bank_dtype='float16' or 'bfloat16', e.g. "
        "keras_okd.methods.tsb(..., bank_dtype='bfloat16')) halves it; keep the bank in host memory (build the "
        "distiller on the CPU, e.g. inside `with keras.device('cpu:0'):`, when the host has the RAM); or train "
        "fewer students at once."
    )


def synchronized_batch_norm_supported():
    """Whether `BatchNormalization(synchronized=True)` exists on this engine (Keras: TensorFlow only)."""
    return False


def torch_parameters_by_position(variables):
    """torch only: a `torch.nn.ParameterDict` of `variables` keyed by position."""
    raise NotImplementedError("torch_parameters_by_position is used by Keras's torch backend only.")


def keep_state_for_errors(model, optimizer=True):
    """JAX only: record the variables' values so that a failure in the first step can reattach them."""


def reattach_state(model):
    """JAX only: reattach the variables the trainer detached, after an error interrupted a call."""


@contextlib.contextmanager
def usable_after_errors(model, optimizer=True, record=False):
    """Run a `fit` / `evaluate` / `predict` call so that an error inside it leaves `model` usable (JAX)."""
    yield


def _wrong_engine(name):
    import keras

    needs = STRATEGY_ENGINES.get(name)
    if name not in STRATEGY_ENGINES:
        return f"Unknown strategy {name!r}; choose one of {tuple(STRATEGY_ENGINES)}."
    return (f"Strategy {name!r} needs the {needs} backend (KERAS_BACKEND={needs}); this process runs "
            f"{keras.backend.backend()}. The torch backend supports only 'none' (one device).")


# The prologue's result of the training step being traced, per model, in this thread (see `train_step_after`).
_STEP = threading.local()


@contextlib.contextmanager
def _step_value(model, value):
    values = _STEP.__dict__.setdefault("values", {})
    previous = values.get(id(model))
    values[id(model)] = value
    try:
        yield
    finally:
        if previous is None:
            del values[id(model)]
        else:
            values[id(model)] = previous


def step_value(model):
    """Inside `train_step_after(model, ...)`: what its prologue returned; elsewhere None."""
    return getattr(_STEP, "values", {}).get(id(model))


def train_step_after(model, prologue, train_step, data):
    """Keras's train step `train_step(data)` with `prologue()` run first, inside the same (compiled) step, its result
    readable meanwhile through `step_value(model)` (by `compute_loss`, say).

    TensorFlow and PyTorch run the step on the variables themselves, so the prologue reads and writes them directly.
    The value is kept per thread: under a `tf.distribute` strategy each replica traces the step in a thread of its own,
    and the replicas share the model object.
    """
    with _step_value(model, prologue()):
        return train_step(data)
