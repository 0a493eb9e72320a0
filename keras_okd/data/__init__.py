"""Data: sample indices, the papers' datasets with their augmentation, and `get(name)` for configs.

Every loader returns `(train_ds, test_ds, num_train_samples)`: indexed, shuffled, augmented training batches and test
batches, made by `pipeline`. Datasets: the bundled digits, Fashion-MNIST and MNIST from their IDX files (Debian's
`dataset-fashion-mnist` package, or Keras's cache), CIFAR-10/100 and ImageNet 2012 through tensorflow-datasets,
TinyImageNet from its archive's folders, any folder of class sub-folders. A dataset that is not on disk raises
`DatasetNotFoundError` saying what to download and where to put it. Training pipelines are epoch-seeded: epoch e's
order and augmentation depend on (seed, e, step) only, told e by the `DataEpoch` callback `data_epoch(train_ds)`
returns, so a resumed `fit` sees the data an uninterrupted one would.

Only the numpy and Keras parts are imported with the package (`peer_views`/`RandomShiftFlip`, the IDX reader, the
Fashion-MNIST/MNIST and digits arrays, the dataset registry); the tf.data parts (pipelines, `PadCropFlip`, the
CIFAR/ImageNet/TinyImageNet/folder loaders) are imported on first use, so `import keras_okd.data` and the array
loaders work where TensorFlow is not installed (a JAX or PyTorch machine). `keras_okd.data.get(name)` needs
TensorFlow: every loader returns tf.data pipelines.
"""

import importlib

from keras_okd.data.common import DatasetNotFoundError
from keras_okd.data.digits import digits_arrays
from keras_okd.data.idx import IDXFormatError, read_idx, write_idx
from keras_okd.data.mnist_family import fashion_mnist, fashion_mnist_arrays, mnist, mnist_arrays, stratified_subset
from keras_okd.data.registry import get, loader, names, num_classes, register
from keras_okd.data.views import RandomShiftFlip, peer_views, shift_flip

# Names defined in modules that import TensorFlow: resolved on first access (module __getattr__).
_LAZY = {
    "PadCropFlip": "augment",
    "cifar_augment": "augment",
    "load_cifar": "cifar",
    "image_folder": "folder",
    "load_image_folder": "folder",
    "imagenet2012": "imagenet",
    "load_imagenet2012": "imagenet",
    "ImageTransform": "images",
    "DataEpoch": "indexing",
    "data_epoch": "indexing",
    "pipeline": "indexing",
    "with_index": "indexing",
    "load_tinyimagenet": "tiny_imagenet",
    "tinyimagenet": "tiny_imagenet",
}
_SUBMODULES = ("augment", "checks", "cifar", "folder", "imagenet", "images", "indexing", "tiny_imagenet")


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "DataEpoch",
    "DatasetNotFoundError",
    "IDXFormatError",
    "ImageTransform",
    "PadCropFlip",
    "RandomShiftFlip",
    "cifar_augment",
    "data_epoch",
    "digits_arrays",
    "fashion_mnist",
    "fashion_mnist_arrays",
    "get",
    "image_folder",
    "imagenet2012",
    "load_cifar",
    "load_image_folder",
    "load_imagenet2012",
    "load_tinyimagenet",
    "loader",
    "mnist",
    "mnist_arrays",
    "names",
    "num_classes",
    "peer_views",
    "pipeline",
    "read_idx",
    "register",
    "shift_flip",
    "stratified_subset",
    "tinyimagenet",
    "with_index",
    "write_idx",
]
