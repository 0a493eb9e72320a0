"""Per-peer views: `RandomShiftFlip`, the papers' pad-and-crop + flip as a Keras layer in `keras.ops`, and
`peer_views`, the layer KDCL, PCL and DKEL give each peer its own augmented view with.

Pure Keras (no TensorFlow import): the layer compiles inside the training step on every backend, and this module
loads where only JAX or PyTorch is installed. `keras_okd.data.augment` re-exports it beside the tf.data
`PadCropFlip`.
"""

import keras
from keras import ops


def shift_flip(images, dy, dx, flip, padding, data_format=None):
    """Shift each image of a batch by whole pixels with zero fill, then flip it left-right where `flip` is set.

    The same as zero-padding by `padding` on every side and cropping the `H x W` window whose top-left corner is
    `(dy[b], dx[b])` in the padded image (the papers' pad-and-crop), then reversing the columns of images with
    `flip[b]`. Written with a gather and a `where`, so it traces under `tf.function`, `jax.jit` and torch.

    Args:
        images: `(B, H, W, C)` (or `(B, C, H, W)` with `data_format="channels_first"`) tensor of any dtype.
        dy: integer tensor `(B,)` in `[0, 2 * padding]`: the window's top row in the padded image.
        dx: integer tensor `(B,)` in `[0, 2 * padding]`: the window's left column in the padded image.
        flip: boolean tensor `(B,)`: reverse the columns of these images.
        padding: the zero padding, in pixels.
        data_format: `"channels_last"` or `"channels_first"`; defaults to `keras.config.image_data_format()`.

    Returns:
        A tensor of the shape and dtype of `images`.

    Example:

    >>> import numpy as np
    >>> x = np.arange(9, dtype="float32").reshape(1, 3, 3, 1)
    >>> out = shift_flip(x, np.array([2]), np.array([1]), np.array([False]), padding=1)
    >>> np.asarray(keras.ops.convert_to_numpy(out))[0, :, :, 0]
    array([[3., 4., 5.],
           [6., 7., 8.],
           [0., 0., 0.]], dtype=float32)
    """
    data_format = data_format or keras.config.image_data_format()
    images = ops.convert_to_tensor(images)
    if data_format == "channels_first":
        out = shift_flip(ops.transpose(images, (0, 2, 3, 1)), dy, dx, flip, padding, "channels_last")
        return ops.transpose(out, (0, 3, 1, 2))
    shape = ops.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    rows = ops.cast(dy, "int32")[:, None] - padding + ops.arange(height, dtype="int32")[None, :]  # (B, H) source rows
    cols = ops.cast(dx, "int32")[:, None] - padding + ops.arange(width, dtype="int32")[None, :]  # (B, W)
    cols = ops.where(ops.cast(flip, "bool")[:, None], ops.flip(cols, axis=1), cols)
    inside = ops.logical_and(
        ops.logical_and(rows >= 0, rows < height)[:, :, None], ops.logical_and(cols >= 0, cols < width)[:, None, :]
    )  # (B, H, W): pixels that come from the image, not from the zero padding
    first = ops.arange(batch, dtype="int32") * (height * width)  # flat position of each image's first pixel
    source = (
        first[:, None, None]
        + ops.clip(rows, 0, height - 1)[:, :, None] * width
        + ops.clip(cols, 0, width - 1)[:, None, :]
    )
    pixels = ops.take(ops.reshape(images, (-1, channels)), ops.reshape(source, (-1,)), axis=0)
    pixels = ops.reshape(pixels, shape)
    return ops.where(inside[..., None], pixels, ops.zeros_like(pixels))


@keras.saving.register_keras_serializable(package="keras_okd")
class RandomShiftFlip(keras.layers.Layer):
    """Random shift by up to `padding` whole pixels with zero fill, and random horizontal flip, per image.

    The CIFAR augmentation of the papers (pad 4, random crop, flip) as a Keras layer written in `keras.ops`: it
    compiles inside the training step on every backend (`tf.function` and XLA, `jax.jit`, torch), so a distiller
    that uses it keeps Keras's compiled step (core `RandomTranslation` reports `supports_jit=False`, which turns
    compilation off for the whole model). Each call draws, for every image, a window offset `(dy, dx)` uniform in
    `[0, 2 * padding]^2` and a flip with probability 1/2; calling it once per peer gives every peer its own draws.

    The draws come from a `keras.random.SeedGenerator` whose state advances by one per draw, so the views of a run
    are a function of `seed` and of how many calls came before (the step and the peer). The layer saves that state
    with its weights (Keras does not save a seed generator's state by itself), so a run resumed from a checkpoint
    (`keras.callbacks.BackupAndRestore`, `load_weights`) draws the views the uninterrupted run would have drawn.

    Only in training (`training=True`) are images changed; otherwise they pass through unchanged.

    Args:
        padding: maximum shift in pixels, >= 0 (CIFAR: 4).
        flip: apply the random horizontal flip.
        seed: integer seed of the draws; None draws one from Python's `random` (set by
            `keras.utils.set_random_seed`).
        data_format: `"channels_last"` (default from `keras.config.image_data_format()`) or `"channels_first"`.
        **kwargs: passed to `keras.layers.Layer` (e.g. `name`).

    Example:

    ```python
    import keras, numpy as np, keras_okd
    views = keras_okd.data.RandomShiftFlip(padding=4, seed=0)
    out = views(np.random.rand(8, 32, 32, 3).astype("float32"), training=True)   # (8, 32, 32, 3)
    student = keras_okd.models.multi_branch("resnet32", 3, num_classes=100, per_branch_inputs=True)
    distiller = keras_okd.methods.dkel(student, views=views)   # compiled step on JAX
    ```
    """

    def __init__(self, padding=4, flip=True, seed=None, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"RandomShiftFlip: padding must be an integer >= 0 (pixels), got {padding!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"RandomShiftFlip: seed must be an integer or None, got {seed!r}.")
        data_format = data_format or keras.config.image_data_format()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(
                f"RandomShiftFlip: data_format must be 'channels_last' or 'channels_first', got {data_format!r}."
            )
        self.padding = padding
        self.flip = bool(flip)
        self.seed = seed
        self.data_format = data_format
        self.seed_generator = keras.random.SeedGenerator(seed, name="views_seed")

    def draw(self, batch_size):
        """Draw the next transforms for `batch_size` images (advances the seed state, as a call does).

        Returns:
            `(dy, dx, flip)`: int32 window offsets in `[0, 2 * padding]` and booleans, each of shape `(batch_size,)`.
        """
        offsets = keras.random.randint((2, batch_size), 0, 2 * self.padding + 1, dtype="int32",
                                       seed=self.seed_generator)
        if self.flip:
            flip = keras.random.randint((batch_size,), 0, 2, dtype="int32", seed=self.seed_generator) > 0
        else:
            flip = ops.zeros((batch_size,), "bool")
        return offsets[0], offsets[1], flip

    def call(self, images, training=True):
        if not training:
            return images
        images = ops.convert_to_tensor(images)
        if len(images.shape) == 3:  # one image
            return self.call(images[None], training)[0]
        dy, dx, flip = self.draw(ops.shape(images)[0])
        return shift_flip(images, dy, dx, flip, self.padding, self.data_format)

    def compute_output_shape(self, input_shape):
        return input_shape

    def save_own_variables(self, store):
        store["seed_generator_state"] = self.seed_generator.state.value

    def load_own_variables(self, store):
        if "seed_generator_state" in store.keys():
            self.seed_generator.state.assign(store["seed_generator_state"])

    def get_config(self):
        config = super().get_config()
        config.update({"padding": self.padding, "flip": self.flip, "seed": self.seed, "data_format": self.data_format})
        return config


def peer_views(height, width, padding=4, flip=True, seed=None):
    """Per-peer augmentation for the methods that give each peer its own view (PCL, DKEL, KDCL): a
    `RandomShiftFlip` layer, run inside the (compiled) training step on every backend: a random shift of up to
    `padding` pixels with zero fill (pad-and-crop) and a random horizontal flip, drawn independently for each image
    and each peer.

    Args:
        height: image height (checked against `padding`).
        width: image width (checked against `padding`).
        padding: maximum shift in pixels (CIFAR: 4).
        flip: add the random horizontal flip.
        seed: optional integer seed of the draws (see `RandomShiftFlip`).

    Returns:
        A `RandomShiftFlip` layer named `"peer_views"`.

    Example:

    ```python
    distiller = keras_okd.methods.pcl(student, views=keras_okd.data.peer_views(32, 32))
    ```
    """
    if not 0 <= int(padding) < min(int(height), int(width)):
        raise ValueError(
            f"peer_views: padding {padding} must lie in [0, min(height, width)) = [0, {min(height, width)}) for "
            f"{height} x {width} images; CIFAR uses 4."
        )
    return RandomShiftFlip(int(padding), flip=flip, seed=seed, name="peer_views")
