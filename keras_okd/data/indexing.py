"""Sample identity and the training pipeline.

* `with_index`: a sample's index in the training set, attached once, kept through shuffling and batching.
* `pipeline`: index -> cache -> shuffle -> batch -> augment -> prefetch, where epoch e's order and augmentation are
  functions of `(seed, e, step)` only, so that a resumed `fit` sees the data an uninterrupted one would.
* `DataEpoch` / `data_epoch(ds)`: the Keras callback that tells such a pipeline which epoch `fit` is in.
"""

import inspect
import os

import keras
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
_INT64_MAX = 2**63 - 1


def with_index(ds):
    """Attach each element's position to an unbatched `(x, y)` dataset: `({"inputs": x, "index": i}, y)`.

    Apply it to the training set in its fixed order, before `shuffle` and `batch`, so that a sample keeps its index
    in every epoch. The temporal accumulator reads and writes its bank rows by this index.

    Args:
        ds: a `tf.data.Dataset` of unbatched `(inputs, label)` pairs.

    Returns:
        A `tf.data.Dataset` of `({"inputs": inputs, "index": int64 scalar}, label)`.

    Raises:
        ValueError: if elements are not pairs, or look batched (labels with an unknown leading dimension).

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((3, 8, 8, 1), "float32"), np.arange(3)))
    >>> [int(x["index"]) for x, _ in with_index(ds)]
    [0, 1, 2]
    """
    spec = ds.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(
            f"with_index expects a dataset of (inputs, label) pairs, got elements {spec}. "
            "Use tfds.load(..., as_supervised=True) or map the elements to pairs first."
        )
    label_spec = spec[1]
    if label_spec.shape.rank and label_spec.shape[0] is None:
        raise ValueError(
            f"with_index expects an unbatched dataset, but the labels have shape {label_spec.shape} (batched?). "
            "Call with_index before .batch(), so that every sample, not every batch, gets its own index."
        )
    return ds.enumerate().map(lambda i, pair: ({"inputs": pair[0], "index": i}, pair[1]), num_parallel_calls=AUTOTUNE)


class DataEpoch(keras.callbacks.Callback):
    """Tells an epoch-seeded training pipeline (`pipeline`) which epoch `fit` is in.

    A pipeline made by `pipeline(..., training=True)` draws epoch e's shuffle order and the augmentation of its
    step s from `(seed, e, s)` alone, but only `fit` knows e: this callback sets it at every epoch start (before
    Keras creates the epoch's iterator). With it, epoch e sees the same data whether the run is uninterrupted or
    resumed at e by `keras.callbacks.BackupAndRestore`. Without it (plain `fit`), every new pass over the dataset
    draws a fresh order from the seed, as `shuffle(seed=..., reshuffle_each_iteration=True)` does, reproducible from
    the first epoch but not from a resumed one.

    Get it from the dataset with `data_epoch(train_ds)`.

    Args:
        seed: the pipeline's seed (None: a random one drawn now; nothing is then reproducible).

    Example:

    ```python
    train, test, n = keras_okd.data.get("digits", seed=0)
    distiller.fit(train, validation_data=test, epochs=20,
                  callbacks=[keras_okd.data.data_epoch(train), keras.callbacks.BackupAndRestore("backup")])
    ```
    """

    def __init__(self, seed=None):
        super().__init__()
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "little")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"DataEpoch: seed must be an int or None, got {seed!r}.")
        self.seed = int(seed)
        # -1: not set by a fit yet; every pass draws its own key (see `epoch_key`)
        self.epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="data_epoch")

    def set_epoch(self, epoch):
        """Make the next pass over the dataset epoch `epoch` (0-based)."""
        self.epoch.assign(int(epoch))

    def on_epoch_begin(self, epoch, logs=None):
        self.set_epoch(epoch)

    def key_dataset(self):
        """A one-element dataset holding the current pass's key: `key(seed, epoch)` when an epoch is set, else a
        fresh random key per pass (drawn from the seed when the iterator is made)."""
        fresh = tf.data.Dataset.random(seed=self.seed, rerandomize_each_iteration=True).take(1)
        epoch, seed = self.epoch, self.seed
        return fresh.map(lambda r: tf.where(epoch >= 0, epoch_key(seed, epoch), r))


def epoch_key(seed, epoch):
    """The int64 key of epoch `epoch` of a pipeline with seed `seed`: a stateless hash of the two."""
    pair = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.stateless_uniform([], seed=pair, minval=None, maxval=None, dtype=tf.int64)


def step_seed(key, step):
    """The `[2]` int64 seed of step `step` of the epoch with key `key` (for stateless random ops)."""
    pair = tf.stack([tf.cast(key, tf.int64), tf.constant(0x5EED, tf.int64)])
    return tf.random.experimental.stateless_fold_in(pair, tf.cast(step, tf.int64))


def data_epoch(ds):
    """The `DataEpoch` callback of a training dataset made by `pipeline` (or `keras_okd.data.get`).

    Args:
        ds: the training dataset that `pipeline(..., training=True)` (or a loader) returned.

    Returns:
        Its `DataEpoch` callback, to pass to `fit` so that a resumed run sees the data an uninterrupted one would.

    Raises:
        ValueError: `ds` was not made by `pipeline(..., training=True)` (or was transformed afterwards, which loses
            the link: call this on the dataset `pipeline` returned).

    Example:

    >>> import keras_okd
    >>> train, test, n = keras_okd.data.get("digits", seed=0)
    >>> type(keras_okd.data.data_epoch(train)).__name__
    'DataEpoch'
    >>> keras_okd.data.data_epoch(train.map(lambda x, y: (x, y)))   # a new dataset: take it before the map
    Traceback (most recent call last):
    ValueError: data_epoch: this dataset was not made by keras_okd.data.pipeline(..., training=True) (or was transformed afterwards: .map, .rebatch, ... return new datasets). Take the callback from the dataset the pipeline returned, before transforming it.

    ```python
    distiller.fit(train, validation_data=test, epochs=20,
                  callbacks=[keras_okd.data.data_epoch(train), keras.callbacks.BackupAndRestore("backup")])
    ```
    """
    clock = getattr(ds, "_keras_okd_data_epoch", None)
    if clock is None:
        raise ValueError(
            "data_epoch: this dataset was not made by keras_okd.data.pipeline(..., training=True) (or was transformed "
            "afterwards: .map, .rebatch, ... return new datasets). Take the callback from the dataset the pipeline "
            "returned, before transforming it."
        )
    return clock


def _map_inputs(fn):
    """Lift a function of the inputs to an element `(x, y)` where x may be an indexed dict."""

    def mapped(x, y):
        if isinstance(x, dict):
            return {**x, "inputs": fn(x["inputs"])}, y
        return fn(x), y

    return mapped


def takes_seed(fn):
    """Whether an augmentation callable takes a `seed=` keyword (a `[2]` int tensor for stateless random ops)."""
    call = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else getattr(fn, "__call__", None)
    try:
        return "seed" in inspect.signature(call).parameters
    except (TypeError, ValueError):
        return False


def _augmented(augment, images, seed):
    if takes_seed(augment):
        return augment(images, seed=seed)
    if isinstance(augment, keras.layers.Layer):
        return augment(images, training=True)
    return augment(images)


def pipeline(ds, batch_size, training, augment=None, indexed=None, shuffle_buffer=None, seed=None, cache=True):
    """The standard input pipeline: (index) -> cache -> (shuffle) -> batch -> (augment) -> prefetch.

    Training pipelines are epoch-seeded: epoch e's shuffle order is drawn from `(seed, e)` and the augmentation of
    its step s from `(seed, e, s)` (for augmentations that take `seed=`, as `PadCropFlip`, `ImageTransform` and
    `RandomResizedCrop` do; a Keras preprocessing layer draws from its own seed generator instead). `fit` tells the
    pipeline e through the `DataEpoch` callback, `data_epoch(ds)`; the runner adds it, and with it a run resumed at
    epoch e sees exactly the data of an uninterrupted one. Without it each pass draws a new order from the seed.

    Args:
        ds: unbatched `(inputs, label)` dataset, in its fixed order.
        batch_size: batch size (>= 1).
        training: shuffle and augment when True.
        augment: a callable on a batch of inputs: a function or object taking `(images, seed=)` (stateless, see
            above), a Keras preprocessing layer (or `keras.Sequential` of them; called with `training=True`), or a
            function of tf tensors; applied only in training.
        indexed: attach sample indices (`with_index`); defaults to `training`.
        shuffle_buffer: shuffle buffer size; defaults to the dataset's cardinality when known, else 10,000; 1 keeps
            the fixed order.
        seed: seed of the shuffle order and augmentation (None: random, not reproducible).
        cache: cache the decoded, un-augmented elements in memory.

    Returns:
        A batched, prefetched `tf.data.Dataset`; for training, `data_epoch(ds)` is its `DataEpoch` callback.

    Raises:
        ValueError: `batch_size` is not a positive int.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((10, 4, 4, 1), "float32"), np.arange(10)))
    >>> train = pipeline(ds, 4, training=True, seed=0)
    >>> clock = data_epoch(train)
    >>> clock.set_epoch(3)
    >>> first = [list(x["index"].numpy()) for x, _ in train]
    >>> clock.set_epoch(3)
    >>> first == [list(x["index"].numpy()) for x, _ in train]
    True
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"pipeline: batch_size must be a positive int, got {batch_size!r}.")
    indexed = training if indexed is None else indexed
    if indexed:
        ds = with_index(ds)
    if cache:
        ds = ds.cache()
    if not training:
        return ds.batch(batch_size).prefetch(AUTOTUNE)
    if shuffle_buffer is None:
        n = int(ds.cardinality())
        shuffle_buffer = n if n > 0 else 10_000
    clock = DataEpoch(seed)
    random_augment = augment is not None and takes_seed(augment)

    def one_epoch(key):
        tf.compat.v1.get_default_graph().seed = None  # the order is a function of the key alone, not of tf's seed
        epoch = ds.shuffle(shuffle_buffer, seed=key, reshuffle_each_iteration=False) if shuffle_buffer > 1 else ds
        return epoch.map(lambda x, y: (x, y, key)) if random_augment else epoch

    size = int(ds.cardinality())
    ds = clock.key_dataset().flat_map(one_epoch)
    if size >= 0:  # flat_map hides the size, which Keras uses for its progress bar and steps per epoch
        ds = ds.apply(tf.data.experimental.assert_cardinality(size))
    ds = ds.batch(batch_size)
    if random_augment:
        ds = ds.enumerate().map(
            lambda step, batch: _map_inputs(lambda images: augment(images, seed=step_seed(batch[2][0], step)))(
                batch[0], batch[1]),
            num_parallel_calls=AUTOTUNE,
        )
    elif augment is not None:
        ds = ds.map(_map_inputs(lambda images: _augmented(augment, images, None)), num_parallel_calls=AUTOTUNE)
    ds = ds.prefetch(AUTOTUNE)
    ds._keras_okd_data_epoch = clock
    return ds
