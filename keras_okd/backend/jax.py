"""JAX: in-place bank rows inside the jitted step, bfloat16 banks as bits, `keras.distribution` over devices and
processes, and keeping variables attached when a call fails."""

import contextlib
import os

import jax
import keras
import numpy as np
from keras import ops

from keras_okd.backend.generic import *  # noqa: F401,F403
from keras_okd.backend.generic import __all__, _wrong_engine  # noqa: F401
from keras_okd.backend import generic


def scatter_rows(variable, indices, rows):
    """`.at[rows].set()` inside the jitted step, whose donated state XLA updates in place.

    No gradient flows into a bank: without stop_gradient, JAX differentiates the scatter (its JVP rule builds N-sized
    buffers), which makes the step O(N).
    """
    rows = ops.stop_gradient(ops.cast(rows, variable.dtype))
    indices = ops.stop_gradient(ops.cast(indices, "int32"))
    variable.assign(variable.value.at[indices].set(rows, unique_indices=True, mode="promise_in_bounds"))


def bank_storage_dtype(dtype):
    """bfloat16 is stored as uint16 bits: XLA's CPU backend has no in-place bfloat16 scatter, it converts the whole
    array to float32 and back to write a batch's rows, so a step with a 1,281,167 x 2 x 1,000 bfloat16 bank took
    5.2 s instead of 4 ms here (benchmarks/bench_bank.py). Stored as uint16 (the same 2 bytes, the same bits), rows
    are written in place and only the batch's rows are converted (`to_storage` / `from_storage`)."""
    dtype = keras.backend.standardize_dtype(dtype)
    return "uint16" if dtype == "bfloat16" else dtype


def to_storage(values, dtype):
    values = ops.cast(values, dtype)
    if bank_storage_dtype(dtype) != keras.backend.standardize_dtype(dtype):
        values = jax.lax.bitcast_convert_type(values, bank_storage_dtype(dtype))
    return values


def from_storage(values, dtype):
    if keras.backend.standardize_dtype(values.dtype) != keras.backend.standardize_dtype(dtype):
        values = jax.lax.bitcast_convert_type(values, keras.backend.standardize_dtype(dtype))
    return values


def initialize_processes():
    """Join the other processes named by the `KERAS_DISTRIBUTION_*` environment variables, once per process.

    Calls `keras.distribution.initialize()` (which reads `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `..._NUM_PROCESSES`
    and `..._PROCESS_ID`) when `KERAS_DISTRIBUTION_NUM_PROCESSES` is above 1; JAX requires it before its first
    computation.
    """
    if int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")) > 1 and not jax.distributed.is_initialized():
        keras.distribution.initialize()


def strategy(name):
    if name == "none":
        return contextlib.nullcontext()
    if name != "jax_data_parallel":
        raise ValueError(_wrong_engine(name))
    initialize_processes()
    return keras.distribution.DataParallel().scope()


def process(name):
    if name != "jax_data_parallel":
        return 0, 1
    initialize_processes()
    return jax.process_index(), jax.process_count()


def num_replicas():
    distribution = keras.distribution.distribution()
    return int(np.prod(distribution.device_mesh.shape)) if distribution is not None else 1


def replica_values(variable):
    """An array replicated over devices gives one array per device shard (a sharded one is returned whole)."""
    value = variable.value if hasattr(variable, "value") else variable
    shards = getattr(value, "addressable_shards", None)
    if shards and all(tuple(s.data.shape) == tuple(value.shape) for s in shards):
        return [np.asarray(s.data) for s in shards]
    return generic.replica_values(variable)


@contextlib.contextmanager
def process_inputs(train=None, evaluation=None):
    """Yield `(train, evaluation)` as each process must feed them under a distribution over several processes
    (auto-sharding on); unchanged otherwise. Keras's own sharding is turned off while the block runs.

    - `train` (a `tf.data.Dataset` of full batches) is cut to this process's share with Keras's own
      `DataParallel.distribute_dataset`, here rather than in Keras: Keras finds the batch size by walking the
      dataset's graph back to its `batch()`, and the distiller's input checks, a `map()` after it, hide it.
    - `evaluation` data is fed whole by every process: the global batch holds each sample once per process, which
      leaves every mean (loss, accuracy) unchanged, and a final partial batch has the same size everywhere.

    Raises:
        ValueError: `train` may end with a partial batch. Keras splits every batch evenly across processes; a partial
            last batch leaves them with different step counts, and the collectives of the last step never meet.
    """
    distribution = keras.distribution.distribution()
    multi = distribution is not None and getattr(distribution, "_is_multi_process", False)
    if not multi or not distribution.auto_shard_dataset:
        yield train, evaluation
        return
    import tensorflow as tf

    given = [d for d in (train, evaluation) if d is not None and not isinstance(d, (tuple, list))]
    if not all(isinstance(d, tf.data.Dataset) for d in given):
        yield train, evaluation  # arrays: Keras refuses them in multi-process training, with its own message
        return
    if train is not None:
        if any(spec.shape.rank == 0 or spec.shape[0] is None for spec in tf.nest.flatten(train.element_spec)):
            raise ValueError(
                f"Training on {jax_process_count()} JAX processes needs every batch of the training dataset full "
                "(a static batch size): batch it with `.batch(batch_size, drop_remainder=True)` (or "
                "`dataset.rebatch(batch_size, drop_remainder=True)`). Keras splits each batch evenly across the "
                "processes, and a partial last batch would leave them with different step counts."
            )
        batches = int(train.cardinality())
        train = distribution.distribute_dataset(train)
        if batches >= 0:  # each full batch becomes one local batch per process: same count (Keras's progress bar)
            train = train.apply(tf.data.experimental.assert_cardinality(batches))
    distribution.auto_shard_dataset = False
    try:
        yield train, evaluation
    finally:
        distribution.auto_shard_dataset = True


def jax_process_count():
    return jax.process_count()


def device_memory():
    """`device.memory_stats()["bytes_limit"]` of the first accelerator, else the host's RAM."""
    try:
        device = jax.devices()[0]
        if device.platform != "cpu":
            stats = device.memory_stats() or {}
            if "bytes_limit" in stats:
                return int(stats["bytes_limit"]), f"JAX device {device}"
            return None, f"JAX device {device}"
    except Exception:  # a device query that fails must not stop training; fall back to host memory
        pass
    return generic.device_memory()


def keep_state_for_errors(model, optimizer=True):
    """Let Keras reattach the model's variables if the first step of a call fails.

    Keras's JAX trainer detaches ("purges") variable values while it holds them as jitted state, and reattaches them
    from its last step's state afterwards. When the very first step of a call fails (a batch refused by the input
    checks, say) there is no last step, and the variables would stay detached. Recording the current values as that
    state costs nothing (JAX arrays are immutable and shared, not copied) and lets `reattach_state` restore them.
    """
    state = {
        "trainable_variables": [v.value for v in model.trainable_variables],
        "non_trainable_variables": [v.value for v in model.non_trainable_variables],
        "metrics_variables": [v.value for v in model.metrics_variables],
    }
    if optimizer and model.optimizer is not None:
        state["optimizer_variables"] = [v.value for v in model.optimizer.variables]
    model._jax_state = state


def reattach_state(model):
    if getattr(model, "_jax_state", None):
        model.jax_state_sync()
        model._jax_state = None


@contextlib.contextmanager
def usable_after_errors(model, optimizer=True, record=False):
    """On an error, reattach the variables from the trainer's last state, or from the state recorded before the
    call when `record` is True (predict: Keras records none before its first batch)."""
    if record:
        keep_state_for_errors(model, optimizer=optimizer)
    try:
        yield
    except BaseException:
        reattach_state(model)
        raise


def unrolled_gradient(step_losses, final_loss, theta, phi, update):
    """`jax.grad` of the unrolled look-ahead (see `keras_okd.backend.generic.unrolled_gradient`)."""

    def outer(phi):
        current, carry = list(theta), None
        for k, loss in enumerate(step_losses):
            grads = jax.grad(loss)(current, phi)
            current, carry = update(current, grads, carry, k)
        return final_loss(current, phi)

    return list(jax.grad(outer)(list(phi)))


def compiled(function):
    """`jax.jit`."""
    return jax.jit(function)


def attach_state(model):
    """Write the trainer's jitted state back into the variables; Keras's JAX `fit` then reads them again before its
    next step (what its own callbacks do when they need the variables)."""
    if getattr(model, "_jax_state", None):
        model.jax_state_sync()


def train_step_after(model, prologue, train_step, state, data):
    """Keras's JAX train step `train_step(state, data)` with `prologue()` run first on the step's `state` (see
    `keras_okd.backend.generic.train_step_after`).

    The step is a pure function of `state` (trainable, non-trainable, optimizer and metrics values): the prologue runs
    in a `StatelessScope` over those values, and the non-trainable values it wrote go into the state the forward pass
    then reads, as Keras's own `stateless_call` carries batch-norm statistics out.
    """
    trainable, non_trainable, optimizer_variables, metrics_variables = state
    mapping = list(zip(model.trainable_variables, trainable)) + list(zip(model.non_trainable_variables, non_trainable))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        value = prologue()
    non_trainable = [scope.get_current_value(v) for v in model.non_trainable_variables]
    with generic._step_value(model, value):
        return train_step((trainable, non_trainable, optimizer_variables, metrics_variables), data)
