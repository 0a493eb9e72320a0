"""The one place where keras-okd looks at which Keras backend runs (with `keras_okd.distribute`, which maps strategy
names to each backend's engine).

Everything else is written in `keras.ops`. What `keras.ops` lacks, or what a backend does differently:

- `scatter_rows` / `gather_rows`: in-place row writes and row-only reads of a bank, O(batch x C) on every backend
  (`ops.scatter_update` returns a new tensor: O(N x C) per step on TensorFlow and PyTorch). TensorFlow:
  `scatter_nd_update` / `ResourceGather` on the variable, all-gathered across replicas under `tf.distribute`; JAX:
  `.at[rows].set()` inside the jitted step, whose donated state XLA updates in place; torch: `index_copy_`.
- `bank_storage_dtype`, `to_storage`, `from_storage`: a bfloat16 bank is stored as its uint16 bit pattern on JAX,
  where XLA's CPU backend converts a whole bfloat16 array to float32 to write rows into it (O(N) per step).
- `scale_loss_for_replicas`, `strategy_scope_of`: what Keras's TensorFlow trainer expects under a strategy.
- `first_replica_batch`, `logs_for_replicas`: two gaps in Keras's TensorFlow trainer under
  `MultiWorkerMirroredStrategy` (dict inputs in its symbolic build; scalar logs in its cross-worker reduction).
- `process_inputs`, `jax_process_count`: what each process feeds under a JAX distribution over several processes.
- `device_memory`, `check_state_fits`: how much memory holds the bank, per backend.
- `synchronized_batch_norm_supported`: Keras implements synchronized batch norm on TensorFlow only.
- `torch_parameters_by_position`, `keep_state_for_errors`, `reattach_state`: two trainer traps, on torch and JAX.
"""

import contextlib

import keras
from keras import ops


def scatter_rows(variable, indices, rows):
    """Write `rows` into `variable[indices]` along axis 0, in place where the backend allows.

    Args:
        variable: a `keras.Variable` of shape `(N, ...)`.
        indices: integer tensor `(batch,)`, unique within the batch, each in `[0, N)`.
        rows: tensor `(batch, ...)` matching `variable.shape[1:]`.
    """
    name = keras.backend.backend()
    # No gradient flows into a bank: without stop_gradient, JAX differentiates the scatter (its JVP rule builds
    # N-sized buffers), which makes the step O(N).
    rows = ops.stop_gradient(ops.cast(rows, variable.dtype))
    if name == "tensorflow":
        import tensorflow as tf

        target = variable.value
        if isinstance(target, tf.Variable):
            _tf_scatter_rows(target, tf.cast(indices, "int64"), rows)
            return
    elif name == "torch":
        import torch

        with torch.no_grad():
            variable.value.index_copy_(0, ops.cast(indices, "int64"), rows)
        return
    elif name == "jax":
        indices = ops.stop_gradient(ops.cast(indices, "int32"))
        variable.assign(variable.value.at[indices].set(rows, unique_indices=True, mode="promise_in_bounds"))
        return
    variable.assign(ops.scatter_update(variable.value, ops.expand_dims(ops.cast(indices, "int32"), -1), rows))


def _tf_scatter_rows(target, indices, rows):
    """TensorFlow: write rows in place; under a `tf.distribute` strategy with several replicas, every replica writes
    the rows of every replica, so all copies of the variable stay identical.

    In replica context each replica only knows its own batch shard. Assigning a mirrored variable there would either
    fail, diverge per replica, or (aggregation "sum"/"mean") blend the replicas' different rows. Instead the indices and
    rows are all-gathered (every replica then holds the same global batch's rows), and one `merge_call` applies the
    same scatter to every replica's copy of the variable.
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1 or not tf.distribute.has_strategy():
        target.scatter_nd_update(tf.expand_dims(indices, -1), rows)
        return
    indices = context.all_gather(indices, axis=0)
    rows = context.all_gather(rows, axis=0)

    def write(variable, i, r):
        return variable.scatter_nd_update(tf.expand_dims(i, -1), r)

    def merge(strategy, variable, i, r):
        return strategy.extended.update(variable, write, args=(i, r), group=False)

    context.merge_call(merge, args=(target, indices, rows))


def gather_rows(variable, indices):
    """`variable[indices]` along axis 0, reading only those rows: O(batch x row size), whatever N is.

    On TensorFlow, `ops.take` would first read the whole variable into a tensor; while that tensor is alive, an
    in-place write to the variable must copy all N rows first (copy-on-write), so the step became O(N). A sparse read
    gathers from the variable's buffer directly.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        target = variable.value
        if isinstance(target, tf.Variable):  # a plain or a mirrored variable (its `handle` is this replica's copy)
            return tf.raw_ops.ResourceGather(resource=target.handle, indices=tf.cast(indices, "int64"), dtype=target.dtype)
    return ops.take(variable.value, indices, axis=0)


def bank_storage_dtype(dtype):
    """The dtype a bank of `dtype` is stored in: `dtype` itself, except bfloat16 on JAX, stored as uint16 bits.

    XLA's CPU backend has no in-place bfloat16 scatter: it converts the whole array to float32 and back to write a
    batch's rows, so a step with a 1,281,167 x 2 x 1,000 bfloat16 bank took 5.2 s instead of 4 ms here
    (benchmarks/bench_bank.py). Stored as uint16 (the same 2 bytes, the same bits), rows are written in place and only
    the batch's rows are converted (`to_storage` / `from_storage`).
    """
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype == "bfloat16" and keras.backend.backend() == "jax":
        return "uint16"
    return dtype


def to_storage(values, dtype):
    """`values` rounded to `dtype`, in the representation `bank_storage_dtype(dtype)` stores."""
    values = ops.cast(values, dtype)
    if bank_storage_dtype(dtype) != keras.backend.standardize_dtype(dtype):
        import jax

        values = jax.lax.bitcast_convert_type(values, bank_storage_dtype(dtype))
    return values


def from_storage(values, dtype):
    """The `dtype` values that `values`, read from a bank stored as `bank_storage_dtype(dtype)`, represent."""
    if keras.backend.standardize_dtype(values.dtype) != keras.backend.standardize_dtype(dtype):
        import jax

        values = jax.lax.bitcast_convert_type(values, keras.backend.standardize_dtype(dtype))
    return values


def scale_loss_for_replicas(loss):
    """Divide a replica's loss by the number of replicas in sync (TensorFlow strategies; identity otherwise).

    Keras's TensorFlow trainer sums the replicas' gradients and multiplies the logged loss back, expecting
    `compute_loss` to return the local loss divided by the replica count, as Keras's own losses do.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            return loss * (1.0 / replicas)
    return loss


def first_replica_batch(strategy, iterator):
    """The first batch of a Keras TensorFlow epoch iterator, each distributed input replaced by its first local copy.

    For building the model's shapes before a distributed `fit`. Keras's TensorFlow trainer instead averages the whole
    batch over replicas with one `strategy.reduce` call, which `MultiWorkerMirroredStrategy` refuses for a dict of
    inputs (and which would average integer sample indices).
    """
    import tensorflow as tf

    for _, _, it in iterator:
        batch = next(it)
        def first(x):
            return strategy.experimental_local_results(x)[0] if isinstance(x, tf.distribute.DistributedValues) else x

        return tf.nest.map_structure(first, batch)
    return None


def _multi_worker():
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode()


def logs_for_replicas(logs):
    """Make a step's scalar logs shape `(1,)` under multi-worker `MultiWorkerMirroredStrategy` (identity otherwise).

    Keras's TensorFlow trainer reduces each log across workers with `strategy.reduce("MEAN", value, axis=0)`, which
    fails on a scalar ("Invalid reduction dimension 0 for input with 0 dimensions"; tensorflow/tensorflow#72388).
    With one axis of length 1 the same call returns the scalar mean over workers.
    """
    if keras.backend.backend() != "tensorflow" or not _multi_worker():
        return logs
    return {key: ops.reshape(value, (1,)) if len(ops.shape(value)) == 0 else value for key, value in logs.items()}


@contextlib.contextmanager
def process_inputs(train=None, evaluation=None):
    """Yield `(train, evaluation)` as each process must feed them under a JAX distribution over several processes
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
    distribution = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
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
    """How many JAX processes train together (1 on other backends)."""
    if keras.backend.backend() != "jax":
        return 1
    import jax

    return jax.process_count()


def strategy_scope_of(model):
    """The scope of the `tf.distribute` strategy `model` was built under (TensorFlow), else a no-op context.

    Models and optimizers that touch `model`'s variables (e.g. the DKEL teacher's initialisation) must be built in it.
    """
    if keras.backend.backend() == "tensorflow":
        strategy = getattr(model, "_distribute_strategy", None)
        if strategy is not None:
            return strategy.scope()
    return contextlib.nullcontext()


def device_memory():
    """`(total_bytes, description)` of the memory that holds the model's variables on this backend.

    The first accelerator when there is one (TensorFlow: the GPU's memory limit from its device attributes; JAX:
    `device.memory_stats()["bytes_limit"]`; torch: `torch.cuda.mem_get_info`), else the host's physical RAM
    (`os.sysconf`). `(None, description)` when it cannot be told.
    """
    import os

    name = keras.backend.backend()
    try:
        if name == "tensorflow":
            import tensorflow as tf

            if tf.config.list_logical_devices("GPU"):
                from tensorflow.python.client import device_lib

                for device in device_lib.list_local_devices():
                    if device.device_type == "GPU":
                        return int(device.memory_limit), f"TensorFlow device {device.name}"
        elif name == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform != "cpu":
                stats = device.memory_stats() or {}
                if "bytes_limit" in stats:
                    return int(stats["bytes_limit"]), f"JAX device {device}"
                return None, f"JAX device {device}"
        elif name == "torch":
            import torch

            if torch.cuda.is_available():
                _, total = torch.cuda.mem_get_info()
                return int(total), f"CUDA device {torch.cuda.get_device_name()}"
    except Exception:  # a device query that fails must not stop training; fall back to host memory
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host memory (RAM)"
    except (ValueError, OSError, AttributeError):
        return None, "host memory (RAM)"


def check_state_fits(nbytes, what):
    """Raise `MemoryError` naming the size and the options when `nbytes` of state cannot fit in `device_memory()`."""
    total, where = device_memory()
    if total is None or nbytes <= total:
        return
    raise MemoryError(
        f"{what} needs {nbytes:,} bytes ({nbytes / 2**30:.2f} GiB) but {where} holds {total:,} bytes "
        f"({total / 2**30:.2f} GiB). Options: a reduced-precision bank (bank_dtype='float16' or 'bfloat16', e.g. "
        "keras_okd.methods.tsb(..., bank_dtype='bfloat16')) halves it; keep the bank in host memory (build the "
        "distiller on the CPU, e.g. inside `with keras.device('cpu:0'):`, when the host has the RAM); or train "
        "fewer students at once."
    )


def torch_parameters_by_position(variables):
    """A `torch.nn.ParameterDict` of `variables` keyed by position (torch backend only).

    Keras's torch backend registers a model's variables with torch under their paths. Peers built by the same
    function have the same layer names, hence the same paths, and all but one would vanish from that registry;
    torch's `zero_grad` would then skip them and their gradients would pile up across steps. Keying by position
    keeps every variable registered.
    """
    import torch

    return torch.nn.ParameterDict({f"v{i}": variable.value for i, variable in enumerate(variables)})


def keep_state_for_errors(model, optimizer=True):
    """JAX only: let Keras reattach the model's variables if the first step of `fit`/`evaluate` fails.

    Keras's JAX trainer detaches ("purges") variable values while it holds them as jitted state, and reattaches them
    from its last step's state afterwards. When the very first step of a call fails (a batch refused by the input
    checks, say) there is no last step, and the variables would stay detached. Recording the current values as that
    state costs nothing (JAX arrays are immutable and shared, not copied) and lets `reattach_state` restore them.
    Called from `on_train_begin` / `on_test_begin`, after Keras has built the optimizer.
    """
    if keras.backend.backend() != "jax":
        return
    state = {
        "trainable_variables": [v.value for v in model.trainable_variables],
        "non_trainable_variables": [v.value for v in model.non_trainable_variables],
        "metrics_variables": [v.value for v in model.metrics_variables],
    }
    if optimizer and model.optimizer is not None:
        state["optimizer_variables"] = [v.value for v in model.optimizer.variables]
    model._jax_state = state


def reattach_state(model):
    """JAX only: reattach the variables the trainer detached, after an error interrupted `evaluate`."""
    if keras.backend.backend() == "jax":
        model.jax_state_sync()


def synchronized_batch_norm_supported():
    """Whether `BatchNormalization(synchronized=True)` exists on this backend (Keras: TensorFlow only)."""
    return keras.backend.backend() == "tensorflow"
