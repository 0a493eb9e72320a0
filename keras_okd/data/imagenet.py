"""ImageNet (ILSVRC 2012, 1,000 classes) through tensorflow-datasets, with the papers' preprocessing.

ImageNet cannot be downloaded automatically: tensorflow-datasets prepares it from the two archives of the ILSVRC 2012
challenge, which you download yourself (free account at https://image-net.org, accept the terms of access):

    ILSVRC2012_img_train.tar   (about 138 GB)
    ILSVRC2012_img_val.tar     (about 6.3 GB)

Put both files, unextracted, into the manual directory (default `<data_dir>/downloads/manual`, with `data_dir`
default `~/tensorflow_datasets`). The first call prepares the dataset into `<data_dir>/imagenet2012` (hours, and
about 150 GB more disk); later calls read the prepared copy.

Preprocessing (TSB follows KDCL, whose code is torchvision's standard recipe): training images get a random resized
crop (area 8%-100% of the image, aspect ratio 3/4-4/3) resized to 224x224 and a horizontal flip; test images are
resized so that the shorter side is 256 and center-cropped to 224x224 (`test_resize="square"`: resized to 256x256
first, as TSB's text literally says). Both are normalised with ImageNet's per-channel mean and std.

The training set is read in tfds's fixed file order (`shuffle_files=False`) so that indices identify samples, and
shuffled with a buffer of `shuffle_buffer` encoded images; images are decoded after shuffling, inside the pipeline.
"""

import os

import tensorflow as tf

from keras_okd.data.images import IMAGENET_MEAN, IMAGENET_STD, DatasetNotFoundError, count, transformed
from keras_okd.data.indexing import pipeline

NUM_CLASSES = 1000
ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def default_data_dir():
    """tensorflow-datasets' data directory: `$TFDS_DATA_DIR` or `~/tensorflow_datasets`."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def load_imagenet2012(split="train", data_dir=None, manual_dir=None, decode=True):
    """One split of ImageNet 2012 from tensorflow-datasets, unbatched `(image, int64 label)` in its fixed order.

    Args:
        split: `"train"` or `"validation"`.
        data_dir: tfds data directory (default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
        manual_dir: folder holding `ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar` (default
            `<data_dir>/downloads/manual`); only read when the dataset is not prepared yet.
        decode: decode the images (uint8 `(H, W, 3)`); False gives the encoded JPEG bytes.

    Returns:
        A `tf.data.Dataset`.

    Raises:
        DatasetNotFoundError: the dataset is neither prepared nor preparable (archives missing); the message says what
            to download and where to put it.

    Example:

    ```python
    # ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in ~/imagenet/manual; the first call prepares the dataset
    val = keras_okd.data.load_imagenet2012("validation", data_dir="~/tensorflow_datasets",
                                           manual_dir="~/imagenet/manual")
    image, label = next(iter(val))   # uint8 (H, W, 3), int64
    ```
    """
    import tensorflow_datasets as tfds

    resolved = os.path.expanduser(data_dir) if data_dir else default_data_dir()
    manual = os.path.expanduser(manual_dir) if manual_dir else os.path.join(resolved, "downloads", "manual")
    decoders = None if decode else {"image": tfds.decode.SkipDecoding()}
    try:
        return tfds.load(
            "imagenet2012",
            split=split,
            data_dir=os.path.expanduser(data_dir) if data_dir else None,
            as_supervised=True,
            shuffle_files=False,
            decoders=decoders,
            download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=manual)},
        )
    except Exception as error:  # tfds raises AssertionError, FileNotFoundError, ... depending on what is missing
        missing = [name for name in ARCHIVES if not os.path.isfile(os.path.join(manual, name))]
        if missing:
            raise DatasetNotFoundError(
                f"ImageNet 2012 is not prepared in {resolved} and cannot be downloaded automatically. Download "
                f"{' and '.join(ARCHIVES)} from https://image-net.org/download-images (free account; accept the "
                f"terms of access) and put them, unextracted, into {manual} (missing now: {', '.join(missing)}); the "
                f"next run prepares the dataset into {os.path.join(resolved, 'imagenet2012')} (several hours, about "
                "150 GB). Or pass `data_dir=<folder>`, a tfds data directory that already holds a prepared "
                "imagenet2012. "
                f"(tensorflow-datasets said: {type(error).__name__}: {str(error)[:300]})"
            ) from error
        raise RuntimeError(
            f"tensorflow-datasets could not load or prepare imagenet2012 (data_dir {resolved}, archives in "
            f"{manual}): {type(error).__name__}: {error}"
        ) from error


class RandomResizedCrop:
    """Batch transform of encoded JPEGs: decode a random crop (area `scale`, aspect `ratio`), resize to `size`,
    flip, scale to [0, 1], normalise. Runs inside tf.data on every backend.

    Args:
        size: output height and width (224).
        scale: range of the crop's fraction of the image area.
        ratio: range of the crop's aspect ratio.
        flip: random horizontal flip.
        mean: per-channel mean, or None.
        std: per-channel std, or None.
        seed: optional seed.
    """

    def __init__(self, size=224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip=True, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, seed=None):
        self.size, self.scale, self.ratio, self.flip, self.seed = int(size), scale, ratio, flip, seed
        self.mean = None if mean is None else tf.constant(mean, tf.float32)
        self.std = None if std is None else tf.constant(std, tf.float32)

    def _one(self, encoded, seed=None):
        shape = tf.io.extract_jpeg_shape(encoded)
        box = dict(bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), min_object_covered=0.0,
                   aspect_ratio_range=self.ratio, area_range=self.scale, max_attempts=10,
                   use_image_if_no_bounding_boxes=True)
        if seed is None:
            begin, crop_size, _ = tf.image.sample_distorted_bounding_box(shape, seed=self.seed or 0, **box)
        else:
            crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
            begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(shape, seed=crop_seed, **box)
        window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
        image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
        image = tf.image.resize(image, (self.size, self.size))
        if self.flip:
            image = (tf.image.random_flip_left_right(image, seed=self.seed) if seed is None
                     else tf.image.stateless_random_flip_left_right(image, flip_seed))
        return tf.clip_by_value(image, 0.0, 255.0)

    def __call__(self, encoded, seed=None):
        """Crop a batch of encoded JPEGs; `seed` (a `[2]` int tensor, from `keras_okd.data.pipeline`) makes every
        draw stateless, a function of it alone."""
        spec = tf.TensorSpec((self.size, self.size, 3), tf.float32)
        if seed is None:
            images = tf.map_fn(self._one, encoded, fn_output_signature=spec)
        else:
            seeds = tf.random.experimental.stateless_split(seed, tf.shape(encoded)[0])
            images = tf.map_fn(lambda item: self._one(item[0], item[1]), (encoded, seeds), fn_output_signature=spec)
        x = images / 255.0
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x


def center_crop(encoded, resize=256, size=224, square=False):
    """Test preprocessing of one encoded JPEG: resize (shorter side to `resize`, or to `resize x resize` when
    `square`), center crop `size x size`; uint8."""
    image = tf.io.decode_jpeg(encoded, channels=3)
    if square:
        target = tf.constant([resize, resize])
    else:
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        target = tf.cast(tf.round(hw * resize / tf.reduce_min(hw)), tf.int32)
        target = tf.maximum(target, resize)
    image = tf.image.resize(image, target)
    top = (target[0] - size) // 2
    left = (target[1] - size) // 2
    image = tf.image.crop_to_bounding_box(image, top, left, size, size)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def imagenet2012(
    data_dir=None,
    manual_dir=None,
    batch_size=256,
    seed=None,
    augment="standard",
    shuffle=True,
    shuffle_buffer=10_000,
    image_size=224,
    resize=256,
    test_resize="shorter_side",
):
    """Training and validation pipelines of ImageNet 2012 as TSB (after KDCL) uses them.

    Args:
        data_dir: tfds data directory (default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
        manual_dir: folder with `ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar` (default
            `<data_dir>/downloads/manual`), needed only until the dataset is prepared.
        batch_size: batch size (TSB: 256).
        seed: shuffle and augmentation seed.
        augment: `"standard"` (random resized crop + flip), `"crop"` (random resized crop only) or None (test
            preprocessing for training too).
        shuffle: shuffle the training set (False: fixed order).
        shuffle_buffer: shuffle buffer, in encoded images (about 110 kB each).
        image_size: crop size (224).
        resize: test-time resize before the center crop (256).
        test_resize: `"shorter_side"` (torchvision's Resize(256)) or `"square"` (256x256).

    Returns:
        `(train_ds, val_ds, num_train_samples)`; training elements are `({"inputs", "index"}, label)`.

    Raises:
        DatasetNotFoundError: the archives are not there; the message says what to download and where to put them.
        ValueError: an unknown `augment` or `test_resize`.

    Example:

    ```python
    train, val, n = keras_okd.data.imagenet2012(data_dir="~/tensorflow_datasets", manual_dir="~/imagenet/manual",
                                                batch_size=256, seed=0)
    students = [keras_okd.models.get("resnet18", num_classes=1000), keras_okd.models.get("resnet34", num_classes=1000)]
    distiller = keras_okd.methods.tsb(students, num_train_samples=n)
    ```
    """
    if augment not in ("standard", "crop", None):
        raise ValueError(f"imagenet2012: augment must be 'standard', 'crop' or None, got {augment!r}.")
    if test_resize not in ("shorter_side", "square"):
        raise ValueError(f"imagenet2012: test_resize must be 'shorter_side' or 'square', got {test_resize!r}.")
    square = test_resize == "square"
    train = load_imagenet2012("train", data_dir, manual_dir, decode=False)
    val = load_imagenet2012("validation", data_dir, manual_dir, decode=False)
    n = count(train)

    def test_view(x, y):
        return center_crop(x, resize, image_size, square), y

    normalise = _Normalise(IMAGENET_MEAN, IMAGENET_STD)
    if augment is None:
        train_ds = pipeline(train.map(test_view, num_parallel_calls=tf.data.AUTOTUNE), batch_size, training=True,
                            augment=normalise, seed=seed, cache=False, shuffle_buffer=shuffle_buffer if shuffle else 1)
    else:
        crop = RandomResizedCrop(image_size, flip=augment == "standard", seed=seed)
        train_ds = pipeline(train, batch_size, training=True, augment=crop, seed=seed, cache=False,
                            shuffle_buffer=shuffle_buffer if shuffle else 1)
    val_ds = transformed(
        pipeline(val.map(test_view, num_parallel_calls=tf.data.AUTOTUNE), batch_size, training=False, cache=False),
        normalise,
    )
    return train_ds, val_ds, n


class _Normalise:
    def __init__(self, mean, std):
        self.mean, self.std = tf.constant(mean, tf.float32), tf.constant(std, tf.float32)

    def __call__(self, images):
        return (tf.cast(images, tf.float32) / 255.0 - self.mean) / self.std
