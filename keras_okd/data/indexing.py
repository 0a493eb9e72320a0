"""Sample identity: a sample's index in the training set, attached once, kept through shuffling and batching."""

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


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


def _map_inputs(fn):
    """Lift a function of the inputs to an element `(x, y)` where x may be an indexed dict."""

    def mapped(x, y):
        if isinstance(x, dict):
            return {**x, "inputs": fn(x["inputs"])}, y
        return fn(x), y

    return mapped


def pipeline(ds, batch_size, training, augment=None, indexed=None, shuffle_buffer=None, seed=None, cache=True):
    """The standard input pipeline: (index) -> cache -> (shuffle) -> batch -> (augment) -> prefetch.

    Args:
        ds: unbatched `(inputs, label)` dataset, in its fixed order.
        batch_size: batch size.
        training: shuffle and augment when True.
        augment: a callable on a batch of inputs (a Keras preprocessing layer or `keras.Sequential` of them, or a
            function of tf tensors); applied only in training.
        indexed: attach sample indices (`with_index`); defaults to `training`.
        shuffle_buffer: shuffle buffer size; defaults to the dataset's cardinality when known, else 10,000.
        seed: shuffle seed.
        cache: cache the decoded, un-augmented elements in memory.

    Returns:
        A batched, prefetched `tf.data.Dataset`.
    """
    indexed = training if indexed is None else indexed
    if indexed:
        ds = with_index(ds)
    if cache:
        ds = ds.cache()
    if training:
        if shuffle_buffer is None:
            n = int(ds.cardinality())
            shuffle_buffer = n if n > 0 else 10_000
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment is not None:
        ds = ds.map(_map_inputs(lambda images: augment(images, training=True) if _takes_training(augment)
                                else augment(images)), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def _takes_training(fn):
    import keras

    return isinstance(fn, keras.layers.Layer)
