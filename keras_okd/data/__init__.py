"""Data: sample indices, the papers' datasets with their augmentation, and `get(name)` for configs.

Every loader returns `(train_ds, test_ds, num_train_samples)`: indexed, shuffled, augmented training batches and test
batches, made by `pipeline`. Datasets: the bundled digits, Fashion-MNIST and MNIST from their IDX files (Debian's
`dataset-fashion-mnist` package, or Keras's cache), CIFAR-10/100 and ImageNet 2012 through tensorflow-datasets,
TinyImageNet from its archive's folders, any folder of class sub-folders. A dataset that is not on disk raises
`DatasetNotFoundError` saying what to download and where to put it. Training pipelines are epoch-seeded: epoch e's
order and augmentation depend on (seed, e, step) only, told e by the `DataEpoch` callback `data_epoch(train_ds)`
returns, so a resumed `fit` sees the data an uninterrupted one would.
"""

from keras_okd.data.augment import PadCropFlip, RandomShiftFlip, cifar_augment, peer_views, shift_flip
from keras_okd.data.cifar import load_cifar
from keras_okd.data.digits import digits_arrays
from keras_okd.data.folder import image_folder, load_image_folder
from keras_okd.data.imagenet import imagenet2012, load_imagenet2012
from keras_okd.data.idx import IDXFormatError, read_idx, write_idx
from keras_okd.data.images import DatasetNotFoundError, ImageTransform
from keras_okd.data.indexing import DataEpoch, data_epoch, pipeline, with_index
from keras_okd.data.mnist_family import fashion_mnist, fashion_mnist_arrays, mnist, mnist_arrays, stratified_subset
from keras_okd.data.registry import get, loader, names, num_classes, register
from keras_okd.data.tiny_imagenet import load_tinyimagenet, tinyimagenet

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
