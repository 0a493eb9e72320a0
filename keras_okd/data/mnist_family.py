"""Fashion-MNIST and MNIST: 60,000 training and 10,000 test images of 28x28x1, 10 classes, from their IDX files.

Real data that needs no download on Debian and Ubuntu: `apt-get install dataset-fashion-mnist` puts Fashion-MNIST's
four original IDX files in `/usr/share/datasets/fashion-mnist/`. Where the files are looked for, in order:

1. `data_dir`, when given: the files in that folder or in its `fashion-mnist/` (`mnist/`) sub-folder. A `data_dir`
   that does not hold them is an error; no other copy is used silently instead.
2. Fashion-MNIST only: Debian's `/usr/share/datasets/fashion-mnist/`.
3. Keras's cache, `$KERAS_HOME/datasets` (default `~/.keras/datasets`), where `keras.datasets.fashion_mnist.load_data()`
   keeps the same four IDX files (in `fashion-mnist/`) and `keras.datasets.mnist.load_data()` keeps `mnist.npz`.
4. With `download=True`: Keras's own download (`keras.datasets.<name>.load_data()`), where a network allows.

Else `DatasetNotFoundError`, naming both ways to get the files (the Debian package, Keras's download). The files are
`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each
gzip-compressed (`.gz`, as distributed) or not.

Pixels are scaled to float32 in [0, 1] (divided by 255), with no mean/std normalisation. Standard training
augmentation (`augment="standard"`): zero-pad 2 pixels and crop a random 28x28 window (whole-pixel shifts of up to 2
in each direction), and for Fashion-MNIST a random horizontal flip (clothes are mirror-symmetric, digits are not:
MNIST's standard augmentation has no flip).

Training subset (`train_size`): the regime studies train on part of the 60,000 images. The subset is a stratified
random sample that depends only on `train_size` and `subset_seed`, never on the run's seed, so every seed and method
of an experiment sees the same images. The rule (`stratified_subset`), in numpy, so that other code can reproduce it:

    rng = np.random.default_rng(subset_seed)
    counts = np.bincount(labels)                       # images per class, classes 0..C-1
    share = train_size * counts / len(labels)          # each class's exact share
    quota = np.floor(share).astype(int)                # its whole part, then one more for the classes with the
    quota[np.argsort(-(share - quota), kind="stable")[:train_size - quota.sum()]] += 1   # largest remainders
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:quota[c]] for c in range(len(counts))]
    indices = np.sort(np.concatenate(chosen))           # kept in file order

(classes in increasing order, one generator for all of them). Fashion-MNIST has 6,000 images per class, so a
`train_size` that is a multiple of 10 takes `train_size / 10` of each. `train_size=None` (or 60,000) is the whole
training set in file order. A sample's index (`keras_okd.data.with_index`) is its position in the subset.

The arrays (`load_raw`, `arrays`, `fashion_mnist_arrays`, `mnist_arrays`, `stratified_subset`) need only numpy: this
module imports TensorFlow only when a tf.data pipeline (`fashion_mnist`, `mnist`) is asked for, so the arrays load
where TensorFlow is not installed (benchmarks/fashion_mnist_gpu.py feeds them to `fit` through a PyDataset).

Example:

```python
train, test, n = keras_okd.data.fashion_mnist(batch_size=128, train_size=20_000, seed=0)
(x, y), (x_test, y_test) = keras_okd.data.fashion_mnist_arrays(train_size=20_000)
```
"""

import os

import numpy as np

from keras_okd.data.common import DatasetNotFoundError, augment_options, dataset_variant, default_data_dir
from keras_okd.data.idx import IDXFormatError, read_images_and_labels

NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)
PADDING = 2
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_DATASETS = {  # title, sub-folder (Keras cache, data_dir), Debian folder, Keras cache file, flip in "standard"
    "fashion_mnist": {"title": "Fashion-MNIST", "subdir": "fashion-mnist", "debian": DEBIAN_DIR, "npz": None,
                      "flip": True},
    "mnist": {"title": "MNIST", "subdir": "mnist", "debian": None, "npz": "mnist.npz", "flip": False},
}


def _spec(name):
    if name not in _DATASETS:
        raise ValueError(f"name must be one of {sorted(_DATASETS)}, got {name!r}.")
    return _DATASETS[name]


def _idx_paths(folder):
    """`{split: (images path, labels path)}` of the four files in `folder` (`.gz` or plain), or None if any is
    missing."""
    found = {}
    for split, names in FILES.items():
        paths = []
        for base in names:
            path = next((os.path.join(folder, base + ext) for ext in (".gz", "")
                         if os.path.isfile(os.path.join(folder, base + ext))), None)
            if path is None:
                return None
            paths.append(path)
        found[split] = tuple(paths)
    return found


def _how_to_get(name, data_dir):
    spec = _spec(name)
    cache = os.path.join(default_data_dir(), spec["npz"] or spec["subdir"] + "/")
    ways = []
    if spec["debian"]:
        ways.append(f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs them in {spec['debian']}/)")
    ways.append(f"`python -c \"import keras; keras.datasets.{name}.load_data()\"` on a machine with a network (Keras "
                f"caches them in {cache}; copy that to the same place here)")
    where = f"`data_dir={data_dir!r}`" if data_dir else "`data_dir=<the folder>`"
    return (f"Get {spec['title']} by {' or by '.join(ways)}, or put the four IDX files ({', '.join(FILES['train'])}, "
            f"{', '.join(FILES['test'])}; .gz or not) in a folder and pass {where}.")


def find_files(name="fashion_mnist", data_dir=None):
    """Where the dataset's files are, without reading them: steps 1-3 of the lookup order in the module docstring.

    Returns:
        `("idx", {"train": (images, labels), "test": (images, labels)})` for IDX files, `("npz", path)` for Keras's
        `mnist.npz`, or None when neither `data_dir` (if not given: Debian's folder and Keras's cache) holds them.

    Raises:
        DatasetNotFoundError: `data_dir` is given and does not hold the files.
    """
    spec = _spec(name)
    title, subdir = spec["title"], spec["subdir"]
    if data_dir is not None:
        data_dir = os.path.expanduser(os.fspath(data_dir))
        for folder in (data_dir, os.path.join(data_dir, subdir)):
            paths = _idx_paths(folder)
            if paths:
                return "idx", paths
        raise DatasetNotFoundError(
            f"{title} not found in data_dir={data_dir!r}: neither it nor {os.path.join(data_dir, subdir)} holds the "
            f"four IDX files. " + _how_to_get(name, data_dir)
        )
    cache = default_data_dir()
    for folder in [spec["debian"]] * bool(spec["debian"]) + [os.path.join(cache, subdir)]:
        paths = _idx_paths(folder)
        if paths:
            return "idx", paths
    if spec["npz"] and os.path.isfile(os.path.join(cache, spec["npz"])):
        return "npz", os.path.join(cache, spec["npz"])
    return None


def _download(name):
    """Keras's own download of `name` (the network step of the lookup order; tests replace it)."""
    import keras

    return getattr(keras.datasets, name).load_data()


def _checked(name, source, images, labels):
    if images.ndim != 3 or images.shape[1:] != INPUT_SHAPE[:2]:
        raise IDXFormatError(f"{source}: expected {_spec(name)['title']} images of 28x28 pixels, got shape "
                             f"{images.shape}.")
    if len(images) != len(labels):
        raise IDXFormatError(f"{source}: {len(images):,} images but {len(labels):,} labels.")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise IDXFormatError(f"{source}: labels must be in [0, {NUM_CLASSES}), got min {labels.min()}, max "
                             f"{labels.max()}.")
    return np.asarray(images, np.uint8), np.asarray(labels, np.int64)


def load_raw(name="fashion_mnist", data_dir=None, download=True):
    """The whole dataset as Keras's `load_data()` gives it: uint8 images `(N, 28, 28)`, int64 labels, file order.

    Args:
        name: `"fashion_mnist"` or `"mnist"`.
        data_dir: folder holding the four IDX files; None: the lookup order of the module docstring.
        download: let Keras download the files when they are nowhere on disk.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: 60,000 and 10,000 images from the original files.

    Raises:
        DatasetNotFoundError: the files are nowhere to be found (and could not be downloaded); the message says how
            to get them.
        IDXFormatError: a file is damaged (bad magic number, truncated, counts that disagree, not 28x28, labels out
            of range).
    """
    title = _spec(name)["title"]
    found = find_files(name, data_dir)
    if found is None:
        if not download:
            raise DatasetNotFoundError(f"{title} not found in {_searched(name)} (download=False). "
                                       + _how_to_get(name, None))
        try:
            (x, y), (xt, yt) = _download(name)
        except Exception as error:  # Keras raises several types when there is no network
            raise DatasetNotFoundError(
                f"{title} not found in {_searched(name)}, and Keras could not download it ({type(error).__name__}: "
                f"{error}). " + _how_to_get(name, None)
            ) from error
        source = f"keras.datasets.{name}"
        splits = {"train": (x, y), "test": (xt, yt)}
    elif found[0] == "npz":
        source = found[1]
        with np.load(source, allow_pickle=False) as f:
            splits = {"train": (f["x_train"], f["y_train"]), "test": (f["x_test"], f["y_test"])}
    else:
        splits = {split: read_images_and_labels(*paths) for split, paths in found[1].items()}
        source = os.path.dirname(found[1]["train"][0])
    return tuple(_checked(name, f"{source} ({split})", *splits[split]) for split in ("train", "test"))


def _searched(name):
    spec = _spec(name)
    places = [spec["debian"], os.path.join(default_data_dir(), spec["subdir"]),
              spec["npz"] and os.path.join(default_data_dir(), spec["npz"])]
    return ", ".join(place for place in places if place)


def stratified_subset(labels, size, seed=0):
    """Indices of a stratified random subset of `size` samples, in increasing order (the rule in the module
    docstring: per-class quotas by largest remainder, a random choice within each class from one generator).

    Kept here rather than `sklearn.model_selection.train_test_split(stratify=...)`: the subset names the images of
    every ledger record and of the bundled `fashion_mnist_1k`, so its rule must stay fixed across library versions
    and be reproducible in a few lines of numpy by other code (benchmarks/minimal_okd_torch.py does); scikit-learn
    promises neither, and refuses a subset of the whole set or of a class with one image
    (tests/test_mnist_family.py::test_stratified_subset_follows_the_documented_rule runs the documented rule).

    Args:
        labels: int labels `(N,)` of classes 0..C-1.
        size: number of samples to keep, 1..N.
        seed: seed of the choice (`numpy.random.default_rng(seed)`).

    Returns:
        An int64 array of `size` indices into `labels`, sorted.

    Raises:
        ValueError: `size` outside [1, N].

    Example:

    >>> import numpy as np
    >>> labels = np.repeat(np.arange(10), 6)
    >>> idx = stratified_subset(labels, 20, seed=0)
    >>> np.bincount(labels[idx]).tolist()
    [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    """
    labels = np.asarray(labels)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= len(labels):
        raise ValueError(f"train_size must be an integer in [1, {len(labels)}] (the training set's size), got "
                         f"{size!r}.")
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels)
    share = size * counts / len(labels)
    quota = np.floor(share).astype(np.int64)
    quota[np.argsort(-(share - quota), kind="stable")[: size - int(quota.sum())]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[: quota[c]] for c in range(len(counts))]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def arrays(name: str = "fashion_mnist", data_dir: str | None = None, download: bool = True,
           train_size: int | None = None, subset_seed: int = 0):
    """The dataset as float32 arrays for numpy users: images `(N, 28, 28, 1)` in [0, 1], int32 labels.

    `fashion_mnist_arrays` and `mnist_arrays` are this function with `name` given.

    Args:
        name: `"fashion_mnist"` or `"mnist"`.
        data_dir: folder holding the four IDX files; None: the lookup order of the module docstring (Debian's folder
            for Fashion-MNIST, Keras's cache, Keras's download).
        download: let Keras download the files when they are nowhere on disk.
        train_size: keep a stratified subset of this many training images (`stratified_subset`); None: all 60,000.
        subset_seed: seed of that subset.

    Returns:
        `((x_train, y_train), (x_test, y_test))`.

    Raises:
        DatasetNotFoundError: `data_dir` does not hold the files, or they are nowhere on disk and `download` is
            False (or the download failed); the message says how to get them.
        IDXFormatError: a file is damaged (see `load_raw`).
    """
    (x, y), (xt, yt) = _subset(load_raw(name, data_dir, download), train_size, subset_seed)

    def scaled(images):
        return (images.astype(np.float32) / 255.0)[..., None]

    return (scaled(x), y.astype(np.int32)), (scaled(xt), yt.astype(np.int32))


def _subset(raw, train_size, subset_seed):
    (x, y), test = raw
    if train_size is None or train_size == len(y):
        return (x, y), test
    keep = stratified_subset(y, train_size, subset_seed)
    return (x[keep], y[keep]), test


def augmentation(name, augment):
    """`(padding, flip)` of an `augment` option of `name`: `"standard"` pads 2 pixels, crops a random 28x28 window
    and flips Fashion-MNIST (not MNIST) left-right; `"crop"` only crops, `"flip"` only flips, None does neither.

    Raises:
        ValueError: an unknown option.

    Example:

    >>> augmentation("fashion_mnist", "standard"), augmentation("mnist", "standard")
    ((2, True), (2, False))
    """
    padding, flip = augment_options(augment, PADDING, name)
    if augment == "standard":
        flip = _spec(name)["flip"]
    return padding, flip


def datasets(name: str, batch_size: int = 128, data_dir: str | None = None, download: bool = True,
             seed: int | None = None, augment: str | None = "standard", shuffle: bool = True,
             train_size: int | None = None, subset_seed: int = 0):
    """Training and test pipelines of Fashion-MNIST or MNIST (`fashion_mnist` and `mnist`, the registry's loaders of
    those names, are this function with `name` given).

    Args:
        name: `"fashion_mnist"` or `"mnist"`.
        batch_size: batch size.
        data_dir: folder holding the four IDX files; None: Debian's folder (Fashion-MNIST), then Keras's cache, then
            Keras's download (module docstring).
        download: let Keras download the files when they are nowhere on disk.
        seed: shuffle and augmentation seed (the run's seed).
        augment: `"standard"` (pad 2, random 28x28 crop, and for Fashion-MNIST a horizontal flip), `"crop"` (pad 2
            and crop), `"flip"`, None, or a Keras layer / callable on batches of [0, 1] float32 images.
        shuffle: shuffle the training set every epoch (False: fixed order).
        train_size: train on a stratified subset of this many images (`stratified_subset`); None: all 60,000.
        subset_seed: seed of that subset (fixed per experiment, independent of `seed`).

    Returns:
        `(train_ds, test_ds, num_train_samples)`; training elements `({"inputs", "index"}, label)`, images float32
        in [0, 1] of shape (28, 28, 1), int32 labels.

    Raises:
        ValueError: an unknown name or `augment` option.
        DatasetNotFoundError: `data_dir` does not hold the files, or they are nowhere on disk and `download` is
            False (or the download failed); the message says how to get them.
    """
    import tensorflow as tf  # only the pipelines need it: the arrays above load without TensorFlow

    from keras_okd.data.augment import PadCropFlip
    from keras_okd.data.indexing import pipeline

    if callable(augment):
        transform = augment
    else:
        padding, flip = augmentation(name, augment)
        transform = PadCropFlip(padding, flip=flip, seed=seed) if padding or flip else None
    (x, y), (xt, yt) = arrays(name, data_dir, download, train_size, subset_seed)
    train = pipeline(tf.data.Dataset.from_tensor_slices((x, y)), batch_size, training=True, augment=transform,
                     seed=seed, shuffle_buffer=None if shuffle else 1)
    test = pipeline(tf.data.Dataset.from_tensor_slices((xt, yt)), batch_size, training=False)
    return train, test, len(y)


_ARRAYS_DOC = """{title} as float32 arrays in [0, 1] `(N, 28, 28, 1)` and int32 labels: `arrays("{name}", ...)`.

Arguments, returns and errors as `arrays`'s, less `name`; files looked for in {places}.

Example:

```python
(x, y), (x_test, y_test) = keras_okd.data.{name}_arrays(train_size=10_000)   # x: (10000, 28, 28, 1)
distiller.fit(x, y, validation_data=(x_test, y_test), batch_size=128, epochs=5)
```
"""
_PIPELINES_DOC = """{title}'s training and test pipelines, the registry's `{name}`: `datasets("{name}", ...)`.

Arguments, returns and errors as `datasets`'s, less `name`; files looked for in {places}. The standard augmentation
pads 2 pixels and crops a random 28x28 window{flip}. The module docstring gives the lookup order and the subset rule.

Example:

```python
train, test, n = keras_okd.data.{name}(batch_size=128, train_size=20_000, seed=0)   # n == 20_000
distiller.fit(train, validation_data=test, epochs=10, callbacks=[keras_okd.data.data_epoch(train)])
```
"""


def _variant(function, name, doc, suffix=""):
    """`function` for the dataset `name`, as the public `<name><suffix>`, its docstring `doc` filled in."""
    spec = _spec(name)
    places = ("`data_dir` when given, else " + "Debian's folder, " * bool(spec["debian"])
              + "Keras's cache, then Keras's download")
    flip = ", then flips it left-right at random" if spec["flip"] else " (no flip: digits are not mirror-symmetric)"
    doc = doc.format(name=name, title=spec["title"], places=places, flip=flip)
    return dataset_variant(function, name, name + suffix, doc)


fashion_mnist = _variant(datasets, "fashion_mnist", _PIPELINES_DOC)
mnist = _variant(datasets, "mnist", _PIPELINES_DOC)
fashion_mnist_arrays = _variant(arrays, "fashion_mnist", _ARRAYS_DOC, "_arrays")
mnist_arrays = _variant(arrays, "mnist", _ARRAYS_DOC, "_arrays")
