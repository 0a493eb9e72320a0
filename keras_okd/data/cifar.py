"""CIFAR-10 and CIFAR-100 through tensorflow-datasets, with the papers' augmentation and normalisation."""

import tensorflow as tf


MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}


def load_cifar(name="cifar10", split="train", data_dir=None, download=True):
    """One split of CIFAR-10/100 as an unbatched `(image float32 normalised, label int64)` dataset, in file order.

    Args:
        name: `"cifar10"` or `"cifar100"`.
        split: `"train"` or `"test"` (any tfds split string).
        data_dir: tfds data directory holding a prepared copy (default: tfds's own, `~/tensorflow_datasets`).
        download: let tfds download and prepare the data when it is missing.

    Returns:
        A `tf.data.Dataset`.

    Raises:
        ValueError: unknown name.
        RuntimeError: the data is not available and could not be downloaded; the message says where to put it.

    Example:

    ```python
    train = keras_okd.data.load_cifar("cifar100", "train")
    ```
    """
    import tensorflow_datasets as tfds

    if name not in MEAN:
        raise ValueError(f"name must be one of {sorted(MEAN)}, got {name!r}.")
    try:
        ds = tfds.load(name, split=split, as_supervised=True, data_dir=data_dir, download=download,
                       shuffle_files=False)
    except Exception as error:  # tfds raises several types for missing data / no network
        raise RuntimeError(
            f"Could not load {name!r} ({split}) with tensorflow-datasets: {error}. On a machine with a network, "
            f"`python -c \"import tensorflow_datasets as tfds; tfds.load('{name}')\"` downloads and prepares it "
            f"into ~/tensorflow_datasets; copy that folder here and pass data_dir=<its path>."
        ) from error
    mean = tf.constant(MEAN[name], tf.float32)
    std = tf.constant(STD[name], tf.float32)
    return ds.map(lambda x, y: ((tf.cast(x, tf.float32) / 255.0 - mean) / std, y), num_parallel_calls=tf.data.AUTOTUNE)
