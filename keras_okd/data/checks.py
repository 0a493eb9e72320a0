"""Checks of a batched `tf.data` training or test set, run inside the pipeline (in TensorFlow, on every backend), so a
bad batch is refused before it reaches a training step.

Each batch `(x, y)` is checked for: sample indices (when `x` is a dict holding `"index"`) in `[0, num_samples)` and
unique within the batch; integer class ids in `[0, num_classes)` (float labels must hold whole numbers); finite input
values; and one batch size for indices, labels and inputs. A failed check raises `tf.errors.InvalidArgumentError`
whose message starts with `CHECK_MARKER` and says what is wrong; `keras_okd.distiller.inputs` turns it into a
`ValueError`.
"""

import tensorflow as tf

CHECK_MARKER = "keras_okd input check: "


def checked(ds, num_samples=None, num_classes=None):
    """`ds` with every batch checked as the module docstring says.

    Args:
        ds: a batched `tf.data.Dataset` of `(inputs, labels)` or `(inputs, labels, sample_weight)`, where `inputs`
            may be a dict with `"index"`.
        num_samples: the size of the training set the indices refer to (None: indices are not range-checked).
        num_classes: the number of classes (None: labels are not range-checked).

    Example:

    >>> import numpy as np
    >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2), "float32"), np.array([0, 1, 2, 9]))).batch(4)
    >>> list(checked(ds, num_classes=10))[0][1].numpy().tolist()
    [0, 1, 2, 9]
    """

    def check(*element):
        x, y = element[0], element[1] if len(element) > 1 else None
        checks = []
        index = x.get("index") if isinstance(x, dict) else None
        sizes = [tf.shape(t)[0] for t in tf.nest.flatten(x) if t.shape.rank]
        if y is not None and y.shape.rank:
            sizes.append(tf.shape(y)[0])
        if len(sizes) > 1:
            checks.append(tf.debugging.Assert(
                tf.reduce_all(tf.equal(tf.stack(sizes), sizes[0])),
                [CHECK_MARKER + "the batch's inputs, indices and labels have different sizes:", tf.stack(sizes)],
            ))
        if index is not None and num_samples is not None:
            index = tf.reshape(tf.cast(index, tf.int64), [-1])
            checks.append(tf.debugging.Assert(
                tf.reduce_all((index >= 0) & (index < num_samples)),
                [CHECK_MARKER + f"index outside [0, {num_samples}); min/max:", tf.reduce_min(index),
                 tf.reduce_max(index)],
            ))
            checks.append(tf.debugging.Assert(
                tf.equal(tf.size(tf.unique(index)[0]), tf.size(index)),
                [CHECK_MARKER + "a batch repeats a sample index (each sample may appear once per batch); indices:",
                 index],
                summarize=16,
            ))
        for t in tf.nest.flatten({k: v for k, v in x.items() if k != "index"} if isinstance(x, dict) else x):
            if t.dtype.is_floating:
                checks.append(tf.debugging.Assert(
                    tf.reduce_all(tf.math.is_finite(t)),
                    [CHECK_MARKER + "the batch's inputs hold non-finite values (NaN or infinity); count:",
                     tf.reduce_sum(tf.cast(~tf.math.is_finite(t), tf.int64))],
                ))
        if y is not None:
            if y.dtype.is_floating:
                checks.append(tf.debugging.Assert(
                    tf.reduce_all(tf.equal(y, tf.round(y))),
                    [CHECK_MARKER + "labels must be integer class ids, got fractional values such as",
                     tf.boolean_mask(y, tf.not_equal(y, tf.round(y)))[:3]],
                ))
            if num_classes is not None:
                labels = tf.cast(y, tf.int64)
                checks.append(tf.debugging.Assert(
                    tf.reduce_all((labels >= 0) & (labels < num_classes)),
                    [CHECK_MARKER + f"label outside [0, {num_classes}); min/max:", tf.reduce_min(labels),
                     tf.reduce_max(labels)],
                ))
        with tf.control_dependencies(checks):
            return tf.nest.map_structure(tf.identity, element if len(element) > 1 else element[0])

    return ds.map(check)


def is_dataset(x):
    """Whether `x` is a `tf.data.Dataset`."""
    return isinstance(x, tf.data.Dataset)


def label_spec(ds):
    """`(shape, dtype)` of the labels of a dataset of `(inputs, labels, ...)` elements, or None."""
    spec = ds.element_spec
    if isinstance(spec, tuple) and len(spec) > 1:
        return spec[1].shape, spec[1].dtype
    return None


def inputs_spec(ds):
    """The element spec of the inputs of a dataset of `(inputs, ...)` elements."""
    spec = ds.element_spec
    return spec[0] if isinstance(spec, tuple) else spec


def cardinality(ds):
    """The number of batches, or None when tf.data cannot tell."""
    n = int(ds.cardinality())
    return n if n >= 0 else None


def first_batches(ds, steps):
    """The first `steps` elements `(inputs, labels)` of a dataset as numpy."""
    return [(tf.nest.map_structure(lambda t: t.numpy(), element[0]), element[1].numpy())
            for element in ds.take(steps)]
