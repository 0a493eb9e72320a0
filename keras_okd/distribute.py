"""Training on several devices: strategy names, and a look at every replica's copy of a variable.

`strategy_scope(name)` is a context manager; build, compile and fit the distiller inside it:

| name                | backend    | what runs                                                                     |
|---------------------|------------|-------------------------------------------------------------------------------|
| `"none"`            | any        | one device                                                                    |
| `"mirrored"`        | tensorflow | `tf.distribute.MirroredStrategy` over the local devices (GPUs, or CPUs)        |
| `"multi_worker"`    | tensorflow | `tf.distribute.MultiWorkerMirroredStrategy` (cluster from `TF_CONFIG`); not working |
|                     |            | yet: Keras's distributed build and output reduction fail on the dict inputs      |
| `"jax_data_parallel"` | jax      | `keras.distribution.DataParallel` over every JAX device (one or more hosts)   |

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
        return keras.distribution.DataParallel().scope()
    return tf_strategy(name).scope()


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
