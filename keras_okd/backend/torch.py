"""PyTorch: in-place bank rows, one parameter registry for peers of one architecture, the CUDA memory."""

import torch
from keras import ops

from keras_okd.backend.generic import *  # noqa: F401,F403
from keras_okd.backend.generic import __all__  # noqa: F401
from keras_okd.backend import generic


def scatter_rows(variable, indices, rows):
    """`index_copy_` on the variable's tensor, in place."""
    rows = ops.stop_gradient(ops.cast(rows, variable.dtype))
    with torch.no_grad():
        variable.value.index_copy_(0, ops.cast(indices, "int64"), rows)


def lerp_variables(targets, sources, amount):
    """One fused `torch._foreach_lerp_` over all pairs (torch runs eagerly: a Python loop of assigns costs one
    dispatch per variable)."""
    with torch.no_grad():
        torch._foreach_lerp_([t.value for t in targets], [s.value.to(t.value.dtype) for t, s in zip(targets, sources)],
                             ops.convert_to_tensor(amount, "float32"))


def device_memory():
    """`torch.cuda.mem_get_info` of the current CUDA device, else the host's RAM."""
    try:
        if torch.cuda.is_available():
            _, total = torch.cuda.mem_get_info()
            return int(total), f"CUDA device {torch.cuda.get_device_name()}"
    except Exception:  # a device query that fails must not stop training; fall back to host memory
        pass
    return generic.device_memory()


def torch_parameters_by_position(variables):
    """A `torch.nn.ParameterDict` of `variables` keyed by position.

    Keras's torch backend registers a model's variables with torch under their paths. Peers built by the same
    function have the same layer names, hence the same paths, and all but one would vanish from that registry;
    torch's `zero_grad` would then skip them and their gradients would pile up across steps. Keying by position
    keeps every variable registered.
    """
    return torch.nn.ParameterDict({f"v{i}": variable.value for i, variable in enumerate(variables)})


def unrolled_gradient(step_losses, final_loss, theta, phi, update):
    """`torch.autograd.grad` with `create_graph=True` through the unrolled look-ahead (see
    `keras_okd.backend.generic.unrolled_gradient`)."""
    phi = [torch.as_tensor(p).detach().requires_grad_(True) for p in phi]
    current, carry = [torch.as_tensor(t).detach().requires_grad_(True) for t in theta], None
    for k, loss in enumerate(step_losses):
        grads = torch.autograd.grad(loss(current, phi), current, create_graph=True, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(current, grads)]
        current, carry = update(current, grads, carry, k)
    grads = torch.autograd.grad(final_loss(current, phi), phi, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(phi, grads)]
