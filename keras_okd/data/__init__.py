"""Data: sample indices, the bundled digits, CIFAR through tensorflow-datasets, the papers' augmentation."""

from keras_okd.data.augment import PadCropFlip, cifar_augment
from keras_okd.data.cifar import cifar, load_cifar
from keras_okd.data.digits import digits, digits_arrays
from keras_okd.data.indexing import pipeline, with_index

__all__ = ["PadCropFlip", "cifar", "cifar_augment", "digits", "digits_arrays", "load_cifar", "pipeline", "with_index"]
