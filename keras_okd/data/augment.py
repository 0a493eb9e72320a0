"""Augmentation of the papers: CIFAR's pad-4 random crop and horizontal flip.

Two forms of the same transform: `PadCropFlip` works on batches in a tf.data pipeline (the loaders' augmentation);
`RandomShiftFlip` is a Keras layer written in `keras.ops` that runs inside a compiled training step on every backend
(the per-peer views of KDCL, PCL and DKEL, `peer_views`; defined in `keras_okd.data.views`, which needs no
TensorFlow). Any Keras layer (core preprocessing layers, or keras-cv's) can be used instead wherever an `augment` is
accepted.
"""

import tensorflow as tf

from keras_okd.data.views import RandomShiftFlip, peer_views, shift_flip  # noqa: F401 - re-exported (TF-free module)


class PadCropFlip:
    """Zero-pad by `padding`, crop a random `height x width` window, flip left-right with probability 1/2.

    Works on a batch `(B, H, W, C)` of tf tensors inside a tf.data pipeline, so every Keras backend gets it; each
    image draws its own crop offset and flip. Called with `seed=` (a `[2]` int tensor, as `keras_okd.data.pipeline`
    passes one per epoch and step) the draws are stateless, a function of that seed alone; otherwise they come from
    a generator seeded with `seed` (or from tf's global generator).

    Args:
        padding: pixels of zero padding on each side (CIFAR: 4).
        flip: apply the random horizontal flip.
        seed: optional seed of the generator used when a call gives no `seed=`.

    Example:

    >>> import numpy as np
    >>> out = PadCropFlip(4)(np.ones((2, 32, 32, 3), "float32"))
    >>> tuple(out.shape)
    (2, 32, 32, 3)
    """

    def __init__(self, padding=4, flip=True, seed=None):
        self.padding, self.flip, self.seed = int(padding), bool(flip), seed
        self._rng = tf.random.Generator.from_seed(seed) if seed is not None else None

    def _uniform(self, shape, maxval, seed=None):
        if seed is not None:
            return tf.random.stateless_uniform(shape, seed, maxval=maxval, dtype=tf.int32)
        if self._rng is not None:
            return self._rng.uniform(shape, maxval=maxval, dtype=tf.int32)
        return tf.random.uniform(shape, maxval=maxval, dtype=tf.int32)

    def __call__(self, images, seed=None):
        images = tf.convert_to_tensor(images)
        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        p = self.padding
        seeds = [None] * 3 if seed is None else tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        padded = tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
        dy = self._uniform((batch,), 2 * p + 1, seeds[0])
        dx = self._uniform((batch,), 2 * p + 1, seeds[1])
        rows = dy[:, None] + tf.range(height)[None, :]  # (B, H)
        cols = dx[:, None] + tf.range(width)[None, :]  # (B, W)
        if self.flip:
            flip = self._uniform((batch,), 2, seeds[2]) > 0
            cols = tf.where(flip[:, None], tf.reverse(cols, axis=[1]), cols)
        out = tf.gather(padded, rows, axis=1, batch_dims=1)  # (B, H, W+2p, C)
        return tf.gather(out, cols, axis=2, batch_dims=1)  # (B, H, W, C)


def cifar_augment(seed=None):
    """The CIFAR augmentation of both papers: pad 4, random 32x32 crop, horizontal flip.

    Args:
        seed: seed of the crops and flips drawn when a call gives no `seed=` (`PadCropFlip`).

    Returns:
        A `PadCropFlip(padding=4, flip=True)`, for a tf.data pipeline (`keras_okd.data.pipeline(..., augment=)`).

    Example:

    >>> import numpy as np
    >>> augment = cifar_augment(seed=0)
    >>> tuple(augment(np.ones((2, 32, 32, 3), "float32")).shape)
    (2, 32, 32, 3)
    """
    return PadCropFlip(padding=4, flip=True, seed=seed)
