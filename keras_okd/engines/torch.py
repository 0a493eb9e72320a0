"""PyTorch fast paths (see `keras_okd.engines`): fused `torch._foreach_*` kernels over lists of variables."""

import collections

import torch


def ema_update(targets, sources, amount):
    """`t <- t + amount * (s - t)` for every pair, as one `torch._foreach_lerp_` per dtype, without gradient.

    `amount` may be a float or a 0-d tensor (read on the device: no host synchronisation).
    """
    amount = getattr(amount, "value", amount)  # a keras.Variable: its tensor
    groups = collections.defaultdict(lambda: ([], []))
    for t, s in zip(targets, sources):
        storage = t._value  # the variable's own tensor (its `value` may be an autocast copy), updated in place
        end = getattr(s, "value", s)
        groups[storage.dtype][0].append(storage)
        groups[storage.dtype][1].append(end if end.dtype == storage.dtype else end.to(storage.dtype))
    with torch.no_grad():
        for dtype, (tensors, ends) in groups.items():
            if isinstance(amount, torch.Tensor):
                weight = amount.detach().to(dtype=dtype, device=tensors[0].device).reshape(())
            else:
                weight = float(amount)
            torch._foreach_lerp_(tensors, [e.detach() for e in ends], weight)
