"""Training on several devices: strategy names, and a look at every replica's copy of a variable.

`strategy_scope(name)` is a context manager; build, compile and fit the distiller inside it:

| name                  | backend    | what runs                                                                   |
|-----------------------|------------|-----------------------------------------------------------------------------|
| `"none"`              | any        | one device                                                                  |
| `"mirrored"`          | tensorflow | `tf.distribute.MirroredStrategy` over the local devices (GPUs, or CPUs)      |
| `"multi_worker"`      | tensorflow | `tf.distribute.MultiWorkerMirroredStrategy`: one process per machine, the    |
|                       |            | cluster in `TF_CONFIG`                                                      |
| `"jax_data_parallel"` | jax        | `keras.distribution.DataParallel` over every JAX device; several processes  |
|                       |            | when the `KERAS_DISTRIBUTION_*` variables are set                           |

Several processes (both engines): start the same command on every machine with the cluster in its environment, e.g.
on two machines (or twice on one, as tests/distribute does on 127.0.0.1):

    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 0}}' \
        KERAS_BACKEND=tensorflow keras-okd train --config FILE --strategy multi_worker      # index 1 on the other
    KERAS_DISTRIBUTION_JOB_ADDRESSES=10.0.0.1:1234 KERAS_DISTRIBUTION_NUM_PROCESSES=2 KERAS_DISTRIBUTION_PROCESS_ID=0 \
        KERAS_BACKEND=jax keras-okd train --config FILE --strategy jax_data_parallel        # id 1 on the other

Every process feeds its share of each global batch (tf.distribute and Keras shard a `tf.data` dataset by process)
and holds the same state. In Python, pass `tf.data` datasets and do everything (build, compile, fit, evaluate) inside
`strategy_scope`: a JAX distribution applies only to calls made under it. A `MultiWorkerMirroredStrategy` must exist
before TensorFlow's first operation (`process("multi_worker")` creates it; the CLI calls it first thing), and JAX
processes must join before JAX's first computation (`initialize_processes`, called by `strategy_scope` and `process`).
`process()` tells which process is the chief; the experiment runner writes the run directory from the chief and keeps
the other processes' files in hidden `.worker<i>` sub-directories, which `keras-okd report` skips.

Limits of the engines, as found on two processes over 127.0.0.1: JAX processes need full training batches
(`drop_remainder=True`; the distiller refuses others before any step, and the experiment runner drops each epoch's
last partial batch of shuffled samples and says so); evaluation data are fed whole by every process, so test metrics
count every sample. Keras's JAX `predict` cannot fetch outputs spread over processes: predict in one process.

The torch backend has no multi-device training in Keras; only `"none"` is accepted there.

Under TensorFlow strategies the temporal accumulator's bank and visit counts are written by `keras_okd.backend.
scatter_rows`, which all-gathers the replicas' indices and rows and writes the same global rows on every replica, so
every replica holds the same bank after every step. Weights, the mean teacher (an EMA computed identically on each
replica from all-reduced weights) and batch-norm statistics (use `synchronized_bn=True` in the zoo) stay identical
too. Under JAX's DataParallel one program runs over the global batch with replicated state, so nothing needs gathering.
"""

import contextlib

import keras
import numpy as np

STRATEGIES = ("none", "mirrored", "multi_worker", "jax_data_parallel")


def strategy_scope(name="none"):
    """A context manager that distributes what is built, compiled and fitted inside it.

    Args:
        name: one of `STRATEGIES` (see the module docstring).
    """
    backend = keras.backend.backend()
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {STRATEGIES}.")
    if name == "none":
        return contextlib.nullcontext()
    needs = {"mirrored": "tensorflow", "multi_worker": "tensorflow", "jax_data_parallel": "jax"}[name]
    if backend != needs:
        raise ValueError(
            f"Strategy {name!r} needs the {needs} backend (KERAS_BACKEND={needs}); this process runs {backend}. "
            "The torch backend supports only 'none' (one device)."
        )
    if name == "jax_data_parallel":
        initialize_processes()
        return keras.distribution.DataParallel().scope()
    return tf_strategy(name).scope()


def initialize_processes():
    """JAX: join the other processes named by the `KERAS_DISTRIBUTION_*` environment variables, once per process.

    Calls `keras.distribution.initialize()` (which reads `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `..._NUM_PROCESSES`
    and `..._PROCESS_ID`) when `KERAS_DISTRIBUTION_NUM_PROCESSES` is above 1; nothing otherwise. JAX requires this
    before its first computation: `strategy_scope("jax_data_parallel")` and the experiment runner call it first.
    """
    import os

    if keras.backend.backend() != "jax":
        return
    import jax

    if int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")) > 1 and not jax.distributed.is_initialized():
        keras.distribution.initialize()


def process(name="none"):
    """`(index, count)` of this process among those training together under strategy `name`; index 0 is the chief.

    `"multi_worker"`: from the strategy's cluster (`TF_CONFIG`; the task of type "chief" when the cluster has one,
    else worker 0, is index 0). `"jax_data_parallel"`: `jax.process_index()`, `jax.process_count()`. Otherwise
    `(0, 1)`.
    """
    if name == "multi_worker":
        resolver = tf_strategy(name).cluster_resolver
        spec = resolver.cluster_spec().as_dict()
        tasks = [(kind, i) for kind in ("chief", "worker") for i in range(len(spec.get(kind, [])))]
        if not tasks:
            return 0, 1
        return tasks.index((resolver.task_type, int(resolver.task_id))), len(tasks)
    if name == "jax_data_parallel":
        import jax

        initialize_processes()
        return jax.process_index(), jax.process_count()
    return 0, 1


_TF_STRATEGIES = {}


def tf_strategy(name):
    """The process's one `tf.distribute` strategy for `name` ("mirrored" or "multi_worker"), created on first use.

    One per process: collective ops of two strategies over the same devices (synchronized batch norm, the bank's
    all-gather) would collide.
    """
    import tensorflow as tf

    if name not in _TF_STRATEGIES:
        make = tf.distribute.MirroredStrategy if name == "mirrored" else tf.distribute.MultiWorkerMirroredStrategy
        _TF_STRATEGIES[name] = make()
    return _TF_STRATEGIES[name]


def num_replicas():
    """How many replicas the current strategy or distribution runs (1 without one)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.distribute.get_strategy().num_replicas_in_sync
    if backend == "jax":
        distribution = keras.distribution.distribution()
        if distribution is not None:
            return int(np.prod(distribution.device_mesh.shape))
    return 1


def replica_values(variable):
    """Every local replica's copy of `variable` as numpy arrays (one array without replicas).

    For checks that replicas agree: a TensorFlow mirrored variable gives one array per device; a JAX array
    replicated over devices gives one per device shard (a sharded, not replicated, array is returned whole).
    """
    value = variable.value if hasattr(variable, "value") else variable
    backend = keras.backend.backend()
    if backend == "tensorflow" and hasattr(value, "values"):
        return [np.asarray(v.numpy()) for v in value.values]
    if backend == "jax" and hasattr(value, "addressable_shards"):
        shards = value.addressable_shards
        if shards and all(tuple(s.data.shape) == tuple(value.shape) for s in shards):
            return [np.asarray(s.data) for s in shards]
    return [np.asarray(keras.ops.convert_to_numpy(value))]
