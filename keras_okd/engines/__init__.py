"""Engine-specific fast paths of a few step operations, one module per engine, each named for it.

Every function here has one meaning on every backend, written once in `keras.ops`; where an engine has a faster
way (torch's fused `_foreach` kernels, which run one kernel over a whole list of tensors instead of one Python call
and several kernels per tensor), the module named for that engine provides it and `keras_okd.engines` uses it when
that engine runs. JAX and TensorFlow compile the step, so XLA and the TF graph already run the keras.ops versions
as fused kernels; they have no module here.

- `ema_update(targets, sources, amount)`: `t <- t + amount * (s - t)` for every pair of variables (the mean
  teacher's EMA step, `t = eta * s + (1 - eta) * t` for `amount = eta`).
"""

import importlib

import keras
from keras import ops


def _engine():
    """The module of the running engine (`keras_okd.engines.torch`), or None when it has none."""
    try:
        return importlib.import_module(f"{__name__}.{keras.backend.backend()}")
    except ModuleNotFoundError:
        return None


def _in_stateless_scope():
    """Inside a `keras.StatelessScope` (JAX's traced step, a symbolic build) assignments must go through Keras."""
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    return in_stateless_scope()


def ema_update(targets, sources, amount):
    """Move every variable in `targets` towards its partner in `sources`: `t <- t + amount * (s - t)`.

    No gradient flows through the update. Under torch the whole list is updated by one fused kernel per dtype
    (`torch._foreach_lerp_`) instead of one `assign` per variable.

    Args:
        targets: list of `keras.Variable`s (the teacher's weights), updated in place.
        sources: list of tensors or variables of the same shapes (the student's weights).
        amount: a Python float or a scalar tensor (e.g. `eta * pending`).

    Example:

    >>> import keras, numpy as np
    >>> t, s = keras.Variable(np.zeros(3, "float32")), keras.Variable(np.ones(3, "float32"))
    >>> ema_update([t], [s], 0.25)
    >>> keras.ops.convert_to_numpy(t)
    array([0.25, 0.25, 0.25], dtype=float32)
    """
    targets, sources = list(targets), list(sources)
    if len(targets) != len(sources):
        raise ValueError(f"ema_update: {len(targets)} targets but {len(sources)} sources; they must pair up.")
    for t, s in zip(targets, sources):
        if tuple(t.shape) != tuple(s.shape):
            raise ValueError(f"ema_update: target {t.path} has shape {tuple(t.shape)}, its source {tuple(s.shape)}.")
    engine = _engine()
    if engine is not None and hasattr(engine, "ema_update") and not _in_stateless_scope():
        return engine.ema_update(targets, sources, amount)
    for t, s in zip(targets, sources):
        step = ops.cast(amount, t.dtype)
        t.assign(t + step * (ops.stop_gradient(ops.cast(s, t.dtype)) - t))
