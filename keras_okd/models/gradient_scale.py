"""`GradientScale`: identity in the forward pass, gradient multiplied by a constant in the backward pass.

Collaborative learning (Song and Chai, NeurIPS 2018) shares the trunk of a network between H classifier heads
("intermediate-level representation sharing") and rescales the gradient that flows back from the heads into the
shared layers by 1/H ("backpropagation rescaling"), so the shared layers get the mean of the heads' gradients and
keep the gradient scale of a single network, while each head's own layers get its full gradient.

Written in `keras.ops` once for every backend: `y = sg(x) + s * (x - sg(x))`, with `sg` the stop-gradient. Its value
is exactly `x` (`x - sg(x)` is exactly zero), and `dy/dx = s`.
"""

import keras
from keras import ops


def scale_gradient(x, scale):
    """`x` unchanged, with its gradient multiplied by `scale` on the way back.

    Args:
        x: a tensor.
        scale: a Python float.

    Returns:
        A tensor equal to `x`.

    Example:

    >>> import numpy as np
    >>> float(scale_gradient(np.float32(2.0), 0.5))
    2.0
    """
    x = ops.convert_to_tensor(x)
    frozen = ops.stop_gradient(x)
    return frozen + ops.cast(scale, x.dtype) * (x - frozen)


@keras.saving.register_keras_serializable(package="keras_okd")
class GradientScale(keras.layers.Layer):
    """Identity layer whose backward pass multiplies the incoming gradient by `scale`.

    It has no weights. Placed where a shared trunk feeds H branches with `scale = 1 / H`, it is collaborative
    learning's backpropagation rescaling (`keras_okd.models.scale_trunk_gradients` inserts it into a
    `multi_branch` model).

    Args:
        scale: the gradient factor, a float in (0, 1].
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Example:

    >>> import numpy as np
    >>> layer = GradientScale(1 / 3)
    >>> x = np.ones((2, 4), "float32")
    >>> bool(np.all(np.asarray(layer(x)) == x))
    True
    """

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        scale = float(scale)
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"GradientScale: scale must lie in (0, 1], got {scale}.")
        self.scale = scale
        self.built = True

    def call(self, inputs):
        return scale_gradient(inputs, self.scale)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
