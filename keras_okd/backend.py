"""The one place where keras-okd looks at which Keras backend runs.

Everything else is written in `keras.ops`. The only thing `keras.ops` lacks is an in-place row update of a
variable: `ops.scatter_update` returns a new tensor, which for a bank of N x C values would cost O(N x C) per
step on TensorFlow and PyTorch. `scatter_rows` writes just the batch's rows, O(batch x C), on every backend:

- tensorflow: `tf.Variable.scatter_nd_update` on the variable behind the Keras variable;
- jax: `.at[rows].set()` inside the jitted train step, whose state buffers Keras donates, so XLA updates in place;
- torch: `Tensor.index_copy_` under `no_grad`.
"""

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
    rows = ops.cast(rows, variable.dtype)
    if name == "tensorflow":
        import tensorflow as tf

        target = variable.value
        if isinstance(target, tf.Variable):
            target.scatter_nd_update(tf.expand_dims(tf.cast(indices, "int64"), -1), rows)
            return
    elif name == "torch":
        import torch

        with torch.no_grad():
            variable.value.index_copy_(0, ops.cast(indices, "int64"), rows)
        return
    elif name == "jax":
        variable.assign(variable.value.at[ops.cast(indices, "int32")].set(rows))
        return
    variable.assign(ops.scatter_update(variable.value, ops.expand_dims(ops.cast(indices, "int32"), -1), rows))


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
