"""TensorFlow: in-place bank rows, `tf.distribute` strategies and what Keras's TensorFlow trainer expects under them."""

import contextlib

import numpy as np
import tensorflow as tf
from keras import ops

from keras_okd.backend.generic import *  # noqa: F401,F403
from keras_okd.backend.generic import __all__, _wrong_engine  # noqa: F401


def scatter_rows(variable, indices, rows):
    """`scatter_nd_update` on the variable, in place; under a strategy with several replicas every replica writes the
    rows of every replica, so all copies of the variable stay identical.

    In replica context each replica only knows its own batch shard. Assigning a mirrored variable there would either
    fail, diverge per replica, or (aggregation "sum"/"mean") blend the replicas' different rows. Instead the indices and
    rows are all-gathered (every replica then holds the same global batch's rows), and one `merge_call` applies the
    same scatter to every replica's copy of the variable.
    """
    rows = ops.stop_gradient(ops.cast(rows, variable.dtype))
    target = variable.value
    if not isinstance(target, tf.Variable):  # inside a stateless scope: no buffer to write in place
        variable.assign(ops.scatter_update(target, ops.expand_dims(ops.cast(indices, "int32"), -1), rows))
        return
    indices = tf.cast(indices, "int64")
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1 or not tf.distribute.has_strategy():
        target.scatter_nd_update(tf.expand_dims(indices, -1), rows)
        return
    indices = context.all_gather(indices, axis=0)
    rows = context.all_gather(rows, axis=0)

    def write(var, i, r):
        return var.scatter_nd_update(tf.expand_dims(i, -1), r)

    def merge(strategy, var, i, r):
        return strategy.extended.update(var, write, args=(i, r), group=False)

    context.merge_call(merge, args=(target, indices, rows))


def gather_rows(variable, indices):
    """A sparse read of the variable's buffer. `ops.take` would first read the whole variable into a tensor; while
    that tensor is alive, an in-place write must copy all N rows first (copy-on-write), so the step became O(N)."""
    target = variable.value
    if isinstance(target, tf.Variable):  # a plain or a mirrored variable (its `handle` is this replica's copy)
        return tf.raw_ops.ResourceGather(resource=target.handle, indices=tf.cast(indices, "int64"), dtype=target.dtype)
    return ops.take(target, indices, axis=0)


def scale_loss_for_replicas(loss):
    """Keras's TensorFlow trainer sums the replicas' gradients and multiplies the logged loss back, expecting
    `compute_loss` to return the local loss divided by the replica count, as Keras's own losses do."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss * (1.0 / replicas) if replicas > 1 else loss


def strategy_scope_of(model):
    """Models and optimizers that touch `model`'s variables (e.g. the DKEL teacher's initialisation) must be built
    in the scope of the strategy `model` was built under."""
    strategy = getattr(model, "_distribute_strategy", None)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def first_replica_batch(strategy, iterator):
    """The first batch of a Keras TensorFlow epoch iterator, each distributed input replaced by its first local copy.

    For building the model's shapes before a distributed `fit`. Keras's TensorFlow trainer instead averages the whole
    batch over replicas with one `strategy.reduce` call, which `MultiWorkerMirroredStrategy` refuses for a dict of
    inputs (and which would average integer sample indices).
    """
    for _, _, it in iterator:
        batch = next(it)

        def first(x):
            return strategy.experimental_local_results(x)[0] if isinstance(x, tf.distribute.DistributedValues) else x

        return tf.nest.map_structure(first, batch)
    return None


def _multi_worker():
    current = tf.distribute.get_strategy()
    return isinstance(current, tf.distribute.MultiWorkerMirroredStrategy) and current.extended._in_multi_worker_mode()


def logs_for_replicas(logs):
    """Make a step's scalar logs shape `(1,)` under multi-worker `MultiWorkerMirroredStrategy` (identity otherwise).

    Keras's TensorFlow trainer reduces each log across workers with `strategy.reduce("MEAN", value, axis=0)`, which
    fails on a scalar ("Invalid reduction dimension 0 for input with 0 dimensions"; tensorflow/tensorflow#72388).
    With one axis of length 1 the same call returns the scalar mean over workers.
    """
    if not _multi_worker():
        return logs
    return {key: ops.reshape(value, (1,)) if len(ops.shape(value)) == 0 else value for key, value in logs.items()}


_STRATEGIES = {}


def tf_strategy(name):
    """The process's one `tf.distribute` strategy for `name` ("mirrored" or "multi_worker"), created on first use.

    One per process: collective ops of two strategies over the same devices (synchronized batch norm, the bank's
    all-gather) would collide.
    """
    if name not in _STRATEGIES:
        make = tf.distribute.MirroredStrategy if name == "mirrored" else tf.distribute.MultiWorkerMirroredStrategy
        _STRATEGIES[name] = make()
    return _STRATEGIES[name]


def strategy(name):
    if name == "none":
        return contextlib.nullcontext()
    if name not in ("mirrored", "multi_worker"):
        raise ValueError(_wrong_engine(name))
    return tf_strategy(name).scope()


def process(name):
    """From the strategy's cluster (`TF_CONFIG`; the task of type "chief" when the cluster has one, else worker 0, is
    index 0) under "multi_worker"; `(0, 1)` otherwise."""
    if name != "multi_worker":
        return 0, 1
    resolver = tf_strategy(name).cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    tasks = [(kind, i) for kind in ("chief", "worker") for i in range(len(spec.get(kind, [])))]
    if not tasks:
        return 0, 1
    return tasks.index((resolver.task_type, int(resolver.task_id))), len(tasks)


def num_replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def replica_values(variable):
    """A mirrored variable gives one array per device."""
    value = variable.value if hasattr(variable, "value") else variable
    if hasattr(value, "values"):
        return [np.asarray(v.numpy()) for v in value.values]
    return [np.asarray(ops.convert_to_numpy(value))]


def device_memory():
    """The first GPU's memory limit from its device attributes, else the host's RAM."""
    try:
        if tf.config.list_logical_devices("GPU"):
            from tensorflow.python.client import device_lib

            for device in device_lib.list_local_devices():
                if device.device_type == "GPU":
                    return int(device.memory_limit), f"TensorFlow device {device.name}"
    except Exception:  # a device query that fails must not stop training; fall back to host memory
        pass
    from keras_okd.backend import generic

    return generic.device_memory()


def synchronized_batch_norm_supported():
    return True


__all__ = list(__all__) + ["tf_strategy"]


def unrolled_gradient(step_losses, final_loss, theta, phi, update):
    """Nested `tf.GradientTape`s over the unrolled look-ahead (see `keras_okd.backend.generic.unrolled_gradient`)."""
    phi = [tf.convert_to_tensor(p) for p in phi]
    with tf.GradientTape() as outer:
        outer.watch(phi)
        current, carry = [tf.convert_to_tensor(t) for t in theta], None
        for k, loss in enumerate(step_losses):
            with tf.GradientTape() as inner:
                inner.watch(current)
                value = loss(current, phi)
            grads = inner.gradient(value, current, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            current, carry = update(current, grads, carry, k)
        value = final_loss(current, phi)
    return outer.gradient(value, phi, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def compiled(function):
    """`tf.function` (retracing only for new input shapes)."""
    return tf.function(function, reduce_retracing=True)
