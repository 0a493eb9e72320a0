"""scikit-learn's digits: 1,797 real 8x8 handwritten digits, bundled with scikit-learn, so no download is needed."""

import numpy as np

NUM_CLASSES = 10
INPUT_SHAPE = (8, 8, 1)


def digits_arrays(validation_size=360, seed=0):
    """The digits as arrays with a fixed, stratified train/validation split.

    Images are float32 `(N, 8, 8, 1)` scaled to [0, 1]; labels int32 `(N,)`.

    Args:
        validation_size: number of validation images (default 360, leaving 1,437 for training).
        seed: seed of the split (the default split is the one every keras-okd figure uses).

    Returns:
        `((x_train, y_train), (x_val, y_val))`.

    Example:

    >>> (x, y), (xv, yv) = digits_arrays()
    >>> x.shape, xv.shape
    ((1437, 8, 8, 1), (360, 8, 8, 1))
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (data.images / 16.0).astype("float32")[..., None]
    labels = data.target.astype("int32")
    x_train, x_val, y_train, y_val = train_test_split(
        images, labels, test_size=validation_size, random_state=seed, stratify=labels
    )
    return (x_train, y_train), (x_val, y_val)
