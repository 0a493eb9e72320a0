"""Data: sample indices, the papers' datasets with their augmentation, and `get(name)` for configs.

Every loader returns `(train_ds, test_ds, num_train_samples)`: indexed, shuffled, augmented training batches and test
batches, made by `pipeline`. Datasets: the bundled digits, CIFAR-10/100 and ImageNet 2012 through tensorflow-datasets,
TinyImageNet from its archive's folders, any folder of class sub-folders. A dataset that is not on disk raises
`DatasetNotFoundError` saying what to download and where to put it.
"""

from keras_okd.data.augment import PadCropFlip, RandomShiftFlip, cifar_augment, peer_views, shift_flip
from keras_okd.data.cifar import cifar, load_cifar
from keras_okd.data.digits import digits, digits_arrays
from keras_okd.data.folder import image_folder, load_image_folder
from keras_okd.data.imagenet import imagenet2012, load_imagenet2012
from keras_okd.data.images import DatasetNotFoundError, ImageTransform
from keras_okd.data.indexing import pipeline, with_index
from keras_okd.data.registry import get, loader, names, num_classes
from keras_okd.data.tiny_imagenet import load_tinyimagenet, tinyimagenet

__all__ = [
    "DatasetNotFoundError",
    "ImageTransform",
    "PadCropFlip",
    "RandomShiftFlip",
    "cifar",
    "cifar_augment",
    "digits",
    "digits_arrays",
    "get",
    "image_folder",
    "imagenet2012",
    "load_cifar",
    "load_image_folder",
    "load_imagenet2012",
    "load_tinyimagenet",
    "loader",
    "names",
    "num_classes",
    "peer_views",
    "pipeline",
    "shift_flip",
    "tinyimagenet",
    "with_index",
]
