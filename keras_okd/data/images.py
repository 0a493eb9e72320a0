"""Shared pieces of the image-file loaders (TinyImageNet, image folders, ImageNet).

* `DatasetNotFoundError` (defined in `keras_okd.data.common`, which needs no TensorFlow): raised when a dataset is
  not on disk; its message says what to download and where to put it.
* `files_dataset`: image files and labels -> an unbatched `(uint8 image, int64 label)` dataset in the given, fixed
  order (so that `keras_okd.data.with_index` gives every sample the same index in every epoch).
* `ImageTransform`: the per-batch transform of the training and test pipelines: scale uint8 pixels to [0, 1], optionally
  pad-crop-flip (as torchvision's `RandomCrop(padding=4)` + `RandomHorizontalFlip` do, so the padding is black in
  pixel space), then normalise by a per-channel mean and standard deviation.

Images stay uint8 until they are batched, so a cached training set takes a quarter of the memory of float32.
"""

import os

import tensorflow as tf

from keras_okd.data.augment import PadCropFlip
from keras_okd.data.common import DatasetNotFoundError, augment_options, default_data_dir  # noqa: F401 - re-exported

AUTOTUNE = tf.data.AUTOTUNE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def list_images(folder):
    """Sorted paths of the image files (jpg, jpeg, png, bmp, gif; any case) directly inside `folder`."""
    return sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
    )


def image_size_of(path, channels=3):
    """`(height, width)` of one image file."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    return int(image.shape[0]), int(image.shape[1])


def files_dataset(paths, labels, image_size, channels=3):
    """Unbatched `(uint8 image (H, W, channels), int64 label)` pairs, decoded from `paths` in their order.

    Args:
        paths: image file paths (jpeg, png, bmp or gif).
        labels: integer class ids, one per path.
        image_size: `(height, width)`; images of another size are resized (bilinear) to it.
        channels: 3 (RGB; grayscale files are converted) or 1.

    Returns:
        A `tf.data.Dataset` in the order of `paths` (decoding runs in parallel, the order is kept).
    """
    height, width = int(image_size[0]), int(image_size[1])
    ds = tf.data.Dataset.from_tensor_slices((list(paths), tf.constant(list(labels), tf.int64)))

    def load(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        same = tf.logical_and(tf.shape(image)[0] == height, tf.shape(image)[1] == width)
        image = tf.cond(
            same,
            lambda: image,
            lambda: tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, (height, width))), 0, 255), tf.uint8),
        )
        return tf.ensure_shape(image, (height, width, channels)), label

    return ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)


class ImageTransform:
    """Per-batch transform: uint8 pixels -> float32 in [0, 1] -> (pad-crop-flip) -> `(x - mean) / std`.

    Args:
        mean: per-channel mean of the [0, 1] pixels, or None for no normalisation.
        std: per-channel standard deviation, or None.
        padding: pad-and-crop augmentation with this many pixels of (black) padding; 0 for none.
        flip: random horizontal flip.
        seed: optional seed of the augmentation's generator; a call's `seed=` (a `[2]` int tensor, passed by
            `keras_okd.data.pipeline`) makes it stateless instead (see `PadCropFlip`).

    Example:

    >>> import numpy as np
    >>> out = ImageTransform(mean=(0.5,), std=(0.5,))(np.full((2, 4, 4, 1), 255, "uint8"))
    >>> float(out[0, 0, 0, 0])
    1.0
    """

    def __init__(self, mean=None, std=None, padding=0, flip=False, seed=None):
        self.mean = None if mean is None else tf.constant(mean, tf.float32)
        self.std = None if std is None else tf.constant(std, tf.float32)
        self.augment = PadCropFlip(padding, flip=flip, seed=seed) if (padding or flip) else None

    def __call__(self, images, seed=None):
        x = tf.cast(images, tf.float32) / 255.0
        if self.augment is not None:
            x = self.augment(x, seed=seed)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x


def transformed(ds, transform):
    """Apply `transform` to the images of a batched `(images, labels)` dataset (the test pipeline's last step)."""
    return ds.map(lambda x, y: (transform(x), y), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def count(ds):
    """Number of elements of a dataset (its cardinality when known, else by iterating once)."""
    n = int(ds.cardinality())
    if n >= 0:
        return n
    return int(ds.reduce(tf.constant(0, tf.int64), lambda c, _: c + 1))
