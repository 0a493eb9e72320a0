"""Datasets by name: `get(name, **kwargs) -> (train_ds, test_ds, num_train_samples)`, used by configs and the CLI.

| name            | loader                                                     | classes | images             |
|-----------------|------------------------------------------------------------|---------|--------------------|
| `digits`        | scikit-learn's bundled digits                              | 10      | 8x8x1              |
| `fashion_mnist` | IDX files: Debian's `dataset-fashion-mnist`, Keras's cache | 10      | 28x28x1            |
| `fashion_mnist_1k` | bundled: 1,000 stratified training images, 10,000 test  | 10      | 28x28x1            |
| `mnist`         | IDX files in `data_dir`, or Keras's `mnist.npz` cache      | 10      | 28x28x1            |
| `cifar10`       | tensorflow-datasets                                        | 10      | 32x32x3            |
| `cifar100`      | tensorflow-datasets                                        | 100     | 32x32x3            |
| `imagenet2012`  | tensorflow-datasets, manual                                | 1000    | 224x224x3          |
| `tinyimagenet`  | the official archive's folders                             | 200     | 64x64x3            |
| `folder`        | any folder of class folders                                | folders | any (`image_size`) |

The functions registered here have annotated signatures: `keras_okd.experiments.config` checks a config's `dataset`
section against them. The run's seed is passed as `seed` (shuffling and augmentation); data splits use their own
fixed seeds, so every seed of an experiment is scored on the same test set.

This module imports no TensorFlow: the loaders import their tf.data modules when called, so `names()`, `loader()`
and the config checks that read the loaders' signatures work where only JAX or PyTorch is installed.
"""

import importlib
import os

from keras_okd.registry import Registry

from keras_okd.data.cifar import CIFAR, cifar10, cifar100
from keras_okd.data.digits import digits_arrays
from keras_okd.data.mnist_family import fashion_mnist, mnist


def _module(name):
    """`keras_okd.data.<name>`, imported on first use (the tf.data loaders import TensorFlow)."""
    return importlib.import_module(f"keras_okd.data.{name}")


def digits_dataset(
    batch_size: int = 64,
    seed: int | None = None,
    validation_size: int = 360,
    split_seed: int = 0,
    augment: str | None = None,
    shuffle: bool = True,
):
    """The bundled digits with a fixed train/validation split (`split_seed`) whatever the run's seed.

    Args:
        batch_size: batch size.
        seed: shuffle (and augmentation) seed.
        validation_size: number of validation images (default 360 of 1,797).
        split_seed: seed of the stratified split.
        augment: None, or `"shift"`: a random shift by up to one pixel (pad 1 + random crop; no flip, digits are not
            mirror-symmetric).
        shuffle: shuffle every epoch (False: fixed order).

    Returns:
        `(train_ds, val_ds, num_train_samples)`.
    """
    if augment not in (None, "shift"):
        raise ValueError(f"digits: augment must be None or 'shift', got {augment!r}.")
    import tensorflow as tf

    from keras_okd.data.augment import PadCropFlip
    from keras_okd.data.indexing import pipeline

    (x, y), (xv, yv) = digits_arrays(validation_size=validation_size, seed=split_seed)
    transform = PadCropFlip(1, flip=False, seed=seed) if augment == "shift" else None
    train = pipeline(tf.data.Dataset.from_tensor_slices((x, y)), batch_size, training=True, augment=transform,
                     seed=seed, shuffle_buffer=None if shuffle else 1)
    val = pipeline(tf.data.Dataset.from_tensor_slices((xv, yv)), batch_size, training=False)
    return train, val, len(x)


def imagenet2012_dataset(
    data_dir: str | None = None,
    manual_dir: str | None = None,
    batch_size: int = 256,
    seed: int | None = None,
    augment: str | None = "standard",
    shuffle: bool = True,
    shuffle_buffer: int = 10_000,
    image_size: int = 224,
    resize: int = 256,
    test_resize: str = "shorter_side",
):
    """ImageNet 2012 through tensorflow-datasets with a manual download directory (see `keras_okd.data.imagenet`)."""
    return _module("imagenet").imagenet2012(data_dir, manual_dir, batch_size, seed, augment, shuffle, shuffle_buffer,
                                            image_size, resize, test_resize)


def tinyimagenet_dataset(
    data_dir: str | None = None,
    batch_size: int = 128,
    seed: int | None = None,
    augment: str | None = "standard",
    shuffle: bool = True,
    cache: bool = True,
):
    """TinyImageNet from the official archive's folders (see `keras_okd.data.tiny_imagenet`)."""
    return _module("tiny_imagenet").tinyimagenet(data_dir, batch_size, seed, augment, shuffle, cache)


def folder_dataset(
    data_dir: str,
    batch_size: int = 64,
    image_size: list | None = None,
    channels: int = 3,
    validation_split: float = 0.2,
    split_seed: int = 0,
    seed: int | None = None,
    augment: str | None = "standard",
    padding: int = 4,
    mean: list | None = None,
    std: list | None = None,
    shuffle: bool = True,
    cache: bool = True,
):
    """Any folder of class sub-folders (see `keras_okd.data.folder`)."""
    return _module("folder").image_folder(data_dir, batch_size, image_size, channels, validation_split, split_seed,
                                          seed, augment, padding, mean, std, shuffle, cache)


#: The Fashion-MNIST subset bundled with the package (scripts/make_fashion_mnist_1k.py): no download, no Debian package.
FASHION_MNIST_1K = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fashion_mnist_1k")


def fashion_mnist_1k(batch_size: int = 64, seed: int | None = None, augment: str | None = None,
                     shuffle: bool = True):
    """Fashion-MNIST's stratified 1,000 training images (`train_size=1000, subset_seed=0` of the full set: the same
    images, in the same order) and all 10,000 test images, bundled with keras-okd (MIT licence, `LICENSE` beside the
    files), so real data train with no download. The regime where the evidence found TSB ahead of independent
    training (README, "Measured here"). Arguments as `fashion_mnist`'s; no augmentation by default.

    Example:

    ```python
    train, test, n = keras_okd.data.get("fashion_mnist_1k", seed=0)     # n == 1000
    ```
    """
    return fashion_mnist(batch_size=batch_size, data_dir=FASHION_MNIST_1K, download=False, seed=seed,
                         augment=augment, shuffle=shuffle)


_LOADERS = {
    "digits": digits_dataset,
    "cifar10": cifar10,
    "cifar100": cifar100,
    "fashion_mnist": fashion_mnist,
    "fashion_mnist_1k": fashion_mnist_1k,
    "mnist": mnist,
    "imagenet2012": imagenet2012_dataset,
    "tinyimagenet": tinyimagenet_dataset,
    "folder": folder_dataset,
}

_CLASSES = {
    "digits": lambda **_: 10,
    "cifar10": lambda **_: CIFAR["cifar10"]["classes"],
    "cifar100": lambda **_: CIFAR["cifar100"]["classes"],
    "fashion_mnist": lambda **_: 10,
    "fashion_mnist_1k": lambda **_: 10,
    "mnist": lambda **_: 10,
    "imagenet2012": lambda **_: _module("imagenet").NUM_CLASSES,
    "tinyimagenet": lambda data_dir=None, **_: len(_module("tiny_imagenet").class_ids(data_dir)),
    "folder": lambda data_dir, **_: _module("folder").num_classes(data_dir),
}


_DATASETS = Registry("dataset", _LOADERS)


def names():
    """The dataset names `get` accepts, sorted (those added by `register` and plugins included).

    Returns:
        A sorted list of strings.

    Example:

    >>> import keras_okd
    >>> {"cifar10", "cifar100", "digits", "fashion_mnist", "tinyimagenet"} <= set(keras_okd.data.names())
    True
    """
    return _DATASETS.names()


def loader(name):
    """The loader function registered as `name` (its signature lists the options `get` accepts).

    Args:
        name: one of `names()`.

    Returns:
        The loader, `loader(**options) -> (train_ds, test_ds, num_train_samples)`.

    Raises:
        ValueError: unknown name; the message lists the known ones.

    Example:

    >>> import inspect, keras_okd
    >>> list(inspect.signature(keras_okd.data.loader("digits")).parameters)
    ['batch_size', 'seed', 'validation_size', 'split_seed', 'augment', 'shuffle']
    """
    return _DATASETS.get(name)


def register(name, loader_function=None, num_classes=None, overwrite=False):
    """Register a dataset loader under `name` for `get`, configs (`dataset: {name: ...}`) and the CLI. Usable as a
    decorator.

    Args:
        name: the dataset's name.
        loader_function: `loader(batch_size=..., seed=..., **options) -> (train_ds, test_ds, num_train_samples)`,
            training batches indexed (`keras_okd.data.pipeline` does it); annotate its options, the config checks
            them against the signature.
        num_classes: the number of classes, or a function of the loader's options returning it.
        overwrite: replace an existing registration.

    Example:

    ```python
    @keras_okd.data.register("my_data", num_classes=5)
    def my_data(batch_size: int = 64, seed: int | None = None):
        (x, y), (xt, yt) = load_my_arrays()
        train = keras_okd.data.pipeline(tf.data.Dataset.from_tensor_slices((x, y)), batch_size, True, seed=seed)
        test = keras_okd.data.pipeline(tf.data.Dataset.from_tensor_slices((xt, yt)), batch_size, False)
        return train, test, len(x)
    ```
    """
    if num_classes is None:
        raise ValueError(f"register({name!r}): pass num_classes (an int, or a function of the loader's options).")

    def add(function):
        _DATASETS.register(name, function, overwrite=overwrite)
        _CLASSES[name] = num_classes if callable(num_classes) else (lambda **_: int(num_classes))
        return function

    return add if loader_function is None else add(loader_function)


def get(name, **kwargs):
    """Load a dataset by name: `(train_ds, test_ds, num_train_samples)`.

    Training batches are `({"inputs": images, "index": sample indices}, labels)`, test batches `(images, labels)`,
    both made by `keras_okd.data.pipeline`.

    Args:
        name: one of `names()`: `"digits"`, `"fashion_mnist"`, `"mnist"`, `"cifar10"`, `"cifar100"`,
            `"imagenet2012"`, `"tinyimagenet"`, `"folder"`.
        **kwargs: options of that dataset's loader (`loader(name)`), e.g. `batch_size`, `data_dir`, `augment`,
            `seed`.

    Returns:
        `(train_ds, test_ds, num_train_samples)`.

    Raises:
        ValueError: unknown name or option.
        DatasetNotFoundError: the data is not on disk; the message says what to download and where to put it.

    Example:

    >>> train, test, n = get("digits", batch_size=128, seed=0)
    >>> n
    1437
    """
    return loader(name)(**kwargs)


def num_classes(name, **kwargs):
    """Number of classes of dataset `name` (for `folder` and `tinyimagenet`, read from `data_dir`).

    Args:
        name: one of `names()`.
        **kwargs: the dataset's options (only `data_dir` is read).

    Returns:
        An int.

    Raises:
        ValueError: unknown name.
        DatasetNotFoundError: `folder` or `tinyimagenet` without its data in `data_dir`.

    Example:

    >>> import keras_okd
    >>> keras_okd.data.num_classes("cifar100"), keras_okd.data.num_classes("digits")
    (100, 10)
    """
    loader(name)
    return int(_CLASSES[name](**kwargs))
