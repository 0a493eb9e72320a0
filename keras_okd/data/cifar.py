"""CIFAR-10 and CIFAR-100 through tensorflow-datasets, with the papers' augmentation and normalisation.

One implementation for both, `load_cifar(name, ...)` and `datasets(name, ...)`, and a table of what tells them apart
(`CIFAR`); `cifar10` and `cifar100`, the registry's loaders, are `datasets` with the name given. The module imports
TensorFlow only when data is asked for, so the registry reads the loaders' signatures without it.
"""

import urllib.error
import urllib.parse
import urllib.request

from keras_okd.data.common import DatasetNotFoundError, dataset_variant

#: The datasets: title, classes, and the per-channel mean and standard deviation of the training images.
CIFAR = {
    "cifar10": {"title": "CIFAR-10", "classes": 10, "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)},
    "cifar100": {"title": "CIFAR-100", "classes": 100, "mean": (0.5071, 0.4865, 0.4409),
                 "std": (0.2673, 0.2564, 0.2762)},
}


def load_cifar(name="cifar10", split="train", data_dir=None, download=True):
    """One split of CIFAR-10/100 as an unbatched `(image float32 normalised, label int64)` dataset, in file order.

    A prepared copy in `data_dir` is read as it is. Without one and with `download=True`, the download hosts are
    contacted once (10 s at most) before tensorflow-datasets starts: where they cannot be reached (no network),
    that fails at once, saying so, instead of after tensorflow-datasets' ten retries (over three minutes).

    Args:
        name: `"cifar10"` or `"cifar100"`.
        split: `"train"` or `"test"` (any tfds split string).
        data_dir: tfds data directory holding a prepared copy (default: tfds's own, `~/tensorflow_datasets`).
        download: let tfds download and prepare the data when it is missing.

    Returns:
        A `tf.data.Dataset`.

    Raises:
        ValueError: unknown name.
        DatasetNotFoundError: the data is not in `data_dir` and could not be downloaded (no network, or
            `download=False`); the message says how to get it and where to put it.
        ModuleNotFoundError: a module tensorflow-datasets needs to download is not installed; the message names it.

    Example:

    ```python
    train = keras_okd.data.load_cifar("cifar100", "train")
    ```
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    if name not in CIFAR:
        raise ValueError(f"name must be one of {sorted(CIFAR)}, got {name!r}.")
    try:
        ds = _read(tfds, name, split, data_dir)
    except Exception as error:  # tfds raises AssertionError for a copy that is not prepared
        builder = tfds.builder(name, data_dir=data_dir)
        if builder.is_prepared():
            raise RuntimeError(f"tensorflow-datasets could not read the prepared {name} in {builder.data_dir}: "
                               f"{type(error).__name__}: {error}") from error
        if not download:
            raise _not_prepared(name, split, data_dir, "`download=False`", error) from error
        _download_and_prepare(builder, name, split, data_dir)
        ds = _read(tfds, name, split, data_dir)
    mean = tf.constant(CIFAR[name]["mean"], tf.float32)
    std = tf.constant(CIFAR[name]["std"], tf.float32)
    return ds.map(lambda x, y: ((tf.cast(x, tf.float32) / 255.0 - mean) / std, y), num_parallel_calls=tf.data.AUTOTUNE)


def _read(tfds, name, split, data_dir):
    return tfds.load(name, split=split, as_supervised=True, data_dir=data_dir, download=False, shuffle_files=False)


def _not_prepared(name, split, data_dir, attempt, error=None):
    said = "" if error is None else \
        f" (tensorflow-datasets said: {type(error).__name__}: {' '.join(str(error).split())[:300]})"
    where = f"in {data_dir}" if data_dir else "in tensorflow-datasets' data directory (~/tensorflow_datasets)"
    return DatasetNotFoundError(
        f"{name} ({split}) is not prepared {where} and {attempt}. On a machine with a network, "
        f"`python -c \"import tensorflow_datasets as tfds; tfds.load('{name}')\"` downloads and prepares it "
        f"into ~/tensorflow_datasets; copy that folder here and pass `data_dir=<its path>`.{said}"
    )


def _download_and_prepare(builder, name, split, data_dir):
    """`builder.download_and_prepare()`, after checking that its download hosts answer."""
    try:
        urls = sorted(builder.url_infos or ())
        for url in urls:
            problem = _unreachable(url)
            if problem:
                raise _not_prepared(name, split, data_dir, f"cannot be downloaded: {problem}, so this machine has "
                                    "no network (or needs a proxy: https_proxy=...); `download=False` skips the "
                                    "attempt")
        builder.download_and_prepare()
    except ImportError as error:  # a broken install, not a missing dataset: name the module
        raise ModuleNotFoundError(
            f"tensorflow-datasets needs the module {error.name!r} to download {name}, and it is not installed "
            f"(reinstall keras-okd, `pip install -e .`, which declares it; or `pip install {error.name}`). "
            f"({type(error).__name__}: {error})", name=error.name) from error
    except DatasetNotFoundError:
        raise
    except Exception as error:  # tfds raises several types for a failed download
        raise _not_prepared(name, split, data_dir, "could not be downloaded", error) from error


def _unreachable(url, timeout=10):
    """Why `url`'s host cannot be reached from here (one request, no retries, through the environment's proxies), or
    None when it answers (any HTTP status counts: the host is there)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"{urllib.parse.urlsplit(url).netloc or url} did not answer ({reason})"


def datasets(name: str, batch_size: int = 64, data_dir: str | None = None, download: bool = True,
             seed: int | None = None, augment: str | None = "standard", shuffle: bool = True):
    """Training and test pipelines of CIFAR-10 or CIFAR-100 (`cifar10` and `cifar100`, the registry's loaders of those
    names, are this function with `name` given).

    Args:
        name: `"cifar10"` or `"cifar100"`.
        batch_size: batch size.
        data_dir: tfds data directory holding a prepared copy (see `load_cifar`).
        download: let tfds download and prepare the data when it is missing.
        seed: shuffle and augmentation seed (the run's seed).
        augment: `"standard"` (`keras_okd.data.cifar_augment`: pad 4, random 32x32 crop, horizontal flip), None, or
            a Keras layer / callable on batches of normalised images.
        shuffle: shuffle the training set every epoch (False: fixed order).

    Returns:
        `(train_ds, test_ds, num_train_samples)`; training elements `({"inputs", "index"}, label)`.

    Raises:
        ValueError: an unknown name or `augment` option.
        DatasetNotFoundError: the data is not prepared and could not be downloaded (see `load_cifar`).
    """
    if not (augment in ("standard", None) or callable(augment)):
        raise ValueError(f"{name}: augment must be 'standard' (pad 4, random crop, flip), None, or a Keras layer / "
                         f"callable on image batches; got {augment!r}.")
    import tensorflow as tf

    from keras_okd.data.augment import cifar_augment
    from keras_okd.data.indexing import pipeline

    train = load_cifar(name, "train", data_dir, download)
    test = load_cifar(name, "test", data_dir, download)
    n = int(train.cardinality())
    if n < 0:
        n = int(train.reduce(tf.constant(0, tf.int64), lambda c, _: c + 1))
    transform = cifar_augment(seed) if augment == "standard" else augment
    return (
        pipeline(train, batch_size, training=True, augment=transform, seed=seed, shuffle_buffer=None if shuffle else 1),
        pipeline(test, batch_size, training=False),
        n,
    )


_DOC = """{title}'s training and test pipelines through tensorflow-datasets, the registry's `{name}`:
`datasets("{name}", ...)` ({classes} classes; arguments, returns and errors as `datasets`'s, less `name`);
`shuffle=False` keeps a fixed order.

Example:

```python
train, test, n = keras_okd.data.get("{name}", batch_size=64, seed=0)    # n == 50_000
```
"""

cifar10 = dataset_variant(datasets, "cifar10", "cifar10", _DOC.format(name="cifar10", **CIFAR["cifar10"]))
cifar100 = dataset_variant(datasets, "cifar100", "cifar100", _DOC.format(name="cifar100", **CIFAR["cifar100"]))
