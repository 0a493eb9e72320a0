"""What the distiller accepts as data, and the checks that refuse bad data before any state changes.

Inputs `x`: whatever the students take (an array, a list of arrays, a dict of named inputs), optionally with each
sample's index in the training set beside it: `{"inputs": x, "index": i}` (as `keras_okd.data.with_index` makes), or
for a dict of named inputs the same dict with one more key `"index"`. Labels `y`: integer class ids `(batch,)` or
`(batch, 1)`.

Numpy arrays given to `fit` of a method whose knowledge needs indices (the temporal accumulator) use their positions
as indices: sample k of the arrays is index k (so `num_train_samples` must be at least their length).

Checks: structural problems (labels of the wrong shape, indices missing where a part needs them, an empty training
set) are refused in `fit` before the first step; values (indices outside `[0, num_samples)` or repeated within a
batch, labels outside `[0, classes)` or fractional, non-finite inputs, batch parts of different sizes) are checked
whole for arrays and batch by batch for `tf.data` datasets, in the pipeline (`keras_okd.data.checks`), before the
batch reaches a step. Every refusal is a `ValueError` saying what is wrong and how to fix it.
"""

import numpy as np
from keras import ops

CHECK_MARKER = "keras_okd input check: "


def split_inputs(inputs):
    """`(student inputs, index or None)` of a batch's `x` (see the module docstring)."""
    if isinstance(inputs, dict) and "index" in inputs:
        rest = {k: v for k, v in inputs.items() if k != "index"}
        if set(rest) == {"inputs"}:
            rest = rest["inputs"]
        return rest, inputs["index"]
    if isinstance(inputs, dict) and set(inputs) == {"inputs"}:
        return inputs["inputs"], None
    return inputs, None


def labels_of(y):
    """Integer labels `(batch,)` from `y` of shape `(batch,)` or `(batch, 1)`."""
    if y is None:
        raise ValueError("OnlineDistiller needs labels y (integer class ids) to train and evaluate.")
    shape = tuple(y.shape)
    if len(shape) > 1 and not (len(shape) == 2 and shape[1] == 1):
        raise ValueError(label_shape_message(shape))
    return ops.reshape(ops.cast(y, "int32"), (-1,))


def is_dataset(x):
    """Whether `x` is a `tf.data.Dataset` (without importing TensorFlow)."""
    import sys

    tf = sys.modules.get("tensorflow")  # a tf.data dataset implies TensorFlow is imported; never import it here
    return tf is not None and isinstance(x, tf.data.Dataset)


class DataCheck:
    """Checks and prepares the data of one distiller.

    Args:
        num_samples: the training set's size that indices refer to (None: no part keeps per-sample state).
        num_classes: C.
        needing_index: names of the knowledge parts that need each sample's index.
    """

    def __init__(self, num_samples, num_classes, needing_index):
        self.num_samples, self.num_classes, self.needing_index = num_samples, num_classes, list(needing_index)

    def training(self, x, y):
        """The training data as the step must see it: checked, with positions as indices for numpy arrays."""
        if is_dataset(x):
            from keras_okd.data import checks

            self._check_spec(x, training=True)
            return checks.checked(x, self.num_samples, self.num_classes)
        if x is None:
            raise ValueError("fit needs training data x.")
        if _is_generator(x):
            return x  # a Python generator or PyDataset: Keras iterates it; the step's own checks still apply
        _, index = split_inputs(x)
        length = _length(x)
        if length == 0:
            raise ValueError("The training data is empty (0 samples); pass at least one batch.")
        if self.needing_index and index is None:
            if self.num_samples is not None and length > self.num_samples:
                raise ValueError(
                    f"The training arrays hold {length} samples but the knowledge state was sized for "
                    f"num_train_samples={self.num_samples}; build the method with num_train_samples={length}."
                )
            index = np.arange(length)
            x = {**x, "index": index} if isinstance(x, dict) else {"inputs": x, "index": index}
        self.arrays(x, y)
        return x

    def evaluation(self, x, y):
        """Validation or test data: checked like training data, without the need for indices."""
        if is_dataset(x):
            from keras_okd.data import checks

            self._check_spec(x, training=False)
            return checks.checked(x, self.num_samples, self.num_classes)
        if x is not None and not _is_generator(x):
            self.arrays(x, y)
        return x

    def validation(self, validation_data):
        if validation_data is None or is_dataset(validation_data):
            return None if validation_data is None else self.evaluation(validation_data, None)
        if isinstance(validation_data, (tuple, list)) and len(validation_data) >= 2:
            self.arrays(validation_data[0], validation_data[1])
        return validation_data

    def arrays(self, x, y):
        """Check whole arrays now: indices (integers, in range, unique), labels, finite float inputs."""
        inputs, index = split_inputs(x)
        if index is not None and self.num_samples is not None:
            index = np.asarray(index)
            if index.size:
                if not np.issubdtype(index.dtype, np.integer):
                    raise ValueError(f"{CHECK_MARKER}sample indices must be integers, got dtype {index.dtype}.")
                low, high = int(index.min()), int(index.max())
                if low < 0 or high >= self.num_samples:
                    raise ValueError(index_range_message(low, high, self.num_samples))
                if np.unique(index.reshape(-1)).size != index.size:
                    raise ValueError(
                        f"{CHECK_MARKER}sample indices repeat (each training sample must have its own index, so no "
                        "batch can hold the same sample twice); attach positions with keras_okd.data.with_index."
                    )
        for array in _leaves(inputs):
            array = np.asarray(array) if hasattr(array, "__array__") else None
            if array is not None and np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
                raise ValueError(
                    f"{CHECK_MARKER}the inputs hold {int(np.sum(~np.isfinite(array)))} non-finite values (NaN or "
                    "infinity); clean or drop those samples."
                )
        if y is not None and hasattr(y, "shape"):
            self.labels(np.asarray(y))

    def labels(self, labels):
        if labels.dtype.kind not in "biuf":  # strings, objects, complex numbers, dates: no class ids
            raise ValueError(label_dtype_message(labels.dtype))
        if labels.ndim > 1 and labels.shape[-1] != 1:
            raise ValueError(label_shape_message(labels.shape))
        if labels.size == 0:
            return
        if not np.issubdtype(labels.dtype, np.integer):
            if not np.all(np.equal(np.mod(labels, 1), 0)):
                raise ValueError(f"{CHECK_MARKER}labels must be integer class ids, got non-integer values.")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.num_classes:
            raise ValueError(label_range_message(low, high, self.num_classes))

    def _check_spec(self, ds, training):
        """Refuse what a dataset's element spec already shows: missing indices, label shapes, no batches."""
        from keras_okd.data import checks

        spec = checks.inputs_spec(ds)
        if training and self.needing_index and not (isinstance(spec, dict) and "index" in spec):
            raise ValueError(missing_index_message(self.needing_index))
        labels = checks.label_spec(ds)
        if labels is not None:
            shape, dtype = labels
            if not (dtype.is_integer or dtype.is_floating or dtype.is_bool):
                raise ValueError(label_dtype_message(dtype.name))
            if shape.rank is not None and (shape.rank > 2 or (shape.rank == 2 and shape[1] not in (1, None))):
                raise ValueError(label_shape_message(tuple(shape)))
        if checks.cardinality(ds) == 0:
            raise ValueError(f"The {'training' if training else 'evaluation'} dataset is empty (0 batches).")


def first_batches(x, y, batch_size, steps):
    """The first `steps` training batches as `(inputs, labels)` numpy pairs (for the teacher's initialisation)."""
    if is_dataset(x):
        from keras_okd.data import checks

        return [(split_inputs(inputs)[0], labels) for inputs, labels in checks.first_batches(x, steps)]
    import keras

    inputs, _ = split_inputs(x)
    size = batch_size or 32
    count = _length(x)
    return [
        (keras.tree.map_structure(lambda a: np.asarray(a[k * size:(k + 1) * size]), inputs),
         np.asarray(y[k * size:(k + 1) * size]))
        for k in range(steps) if k * size < count
    ]


def batch_again(x, y, batch_size, epoch, batch):
    """Training batch `batch` of epoch `epoch` once more, as numpy `(inputs, labels)` with the inputs' `"index"`, for
    work between steps (`keras_okd.distiller.callbacks.OuterSteps`).

    A dataset is read again to that position: a `keras_okd.data.pipeline` dataset draws epoch e's order (and
    augmentation) from its seed, so this is the batch the step trained on; another dataset gives the batch at the
    same position of a new pass; reading to batch b costs b batches of the pipeline (over an epoch with a meta step
    every 50 batches of 391, 0 + 50 + ... + 350 = 1,400 batches: 3.6 passes more; a PyDataset or arrays cost one). A
    `keras.utils.PyDataset` is indexed (`x[batch]`). Arrays: `batch_size` rows drawn
    from `(epoch, batch)` (fit's own shuffle of arrays cannot be replayed), the same on every run, a resumed one
    included.
    """
    import keras

    if is_dataset(x) or isinstance(x, keras.utils.PyDataset):
        inputs, labels = (next(iter(x.skip(batch).take(1))) if is_dataset(x) else x[batch])[:2]
        return keras.tree.map_structure(np.asarray, inputs), np.asarray(labels).reshape(-1)
    if _is_generator(x):
        raise ValueError("A knowledge part that works between steps (outer_every, e.g. L-MCL's meta-optimised pair "
                         "weights) reads training batches again: pass a tf.data.Dataset, a keras.utils.PyDataset or "
                         "arrays to fit, not a generator.")
    count = _length(x)
    rows = np.sort(np.random.default_rng([epoch, batch]).choice(count, size=min(batch_size or 32, count),
                                                                 replace=False))
    return keras.tree.map_structure(lambda a: np.asarray(a)[rows], x), np.asarray(y)[rows].reshape(-1)


class clear_input_errors:
    """Turns the pipeline's TensorFlow assertion errors into a ValueError that says what is wrong and how to fix it."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or CHECK_MARKER not in str(exc) or isinstance(exc, ValueError):
            return False
        message = str(exc)
        detail = message[message.index(CHECK_MARKER) + len(CHECK_MARKER):].split("\n")[0]
        raise ValueError(
            f"Bad batch refused before it reached the training step: {detail.strip()}. Indices must be positions "
            "in the training set (keras_okd.data.with_index, applied before shuffling and batching, with the "
            "distiller's num_train_samples equal to the training set's size); labels must be integer class ids "
            "in [0, num_classes); inputs must be finite."
        ) from None


def _is_generator(x):
    import keras

    return isinstance(x, keras.utils.PyDataset) or hasattr(x, "__next__")


def _leaves(x):
    import keras

    return keras.tree.flatten(x)


def _length(x):
    leaves = [leaf for leaf in _leaves(x) if hasattr(leaf, "shape") and len(leaf.shape)]
    return int(leaves[0].shape[0]) if leaves else 0


def missing_index_message(parts):
    return (
        f"Knowledge part(s) {parts} keep per-sample state and need each training sample's index, but the data has "
        "none. Wrap the training set with keras_okd.data.with_index(ds) before shuffling and batching, or pass "
        "numpy arrays (their positions are the indices)."
    )


def index_range_message(low, high, n):
    return (
        f"{CHECK_MARKER}sample indices span [{low}, {high}] but must lie in [0, {n}) (num_train_samples={n}). "
        "Build the method with num_train_samples equal to the training set's size, and attach indices with "
        "keras_okd.data.with_index before shuffling and batching."
    )


def label_range_message(low, high, c):
    return (
        f"{CHECK_MARKER}labels span [{low}, {high}] but must be class ids in [0, {c}); the students output {c} "
        "logits. Give the students num_classes covering every label."
    )


def label_dtype_message(dtype):
    """The refusal of labels whose dtype cannot hold class ids (strings, objects, complex numbers)."""
    return (f"labels must be integer class ids (0 .. classes - 1), got labels of dtype {dtype}. Map names to ids "
            "first (e.g. numpy.unique(labels, return_inverse=True)[1]).")


def label_shape_message(shape):
    return (
        f"labels must be integer class ids of shape (batch,) or (batch, 1), got shape {tuple(shape)}. For one-hot "
        "labels pass their argmax."
    )
