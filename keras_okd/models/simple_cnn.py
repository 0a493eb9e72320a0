"""A small convolutional network for small images (the bundled 8x8 digits, quick tests)."""

import keras
from keras import layers


def simple_cnn(num_classes=10, input_shape=(8, 8, 1), width=32, name=None):
    """Two conv blocks and a linear classifier: a fast student for small images.

    Args:
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of one image.
        width: filters of the first conv block; the second has `2 * width`.
        name: model name; defaults to `"simple_cnn_{width}"`.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    >>> model = simple_cnn(num_classes=10, input_shape=(8, 8, 1), width=16)
    >>> model.output_shape
    (None, 10)
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for i, filters in enumerate((width, 2 * width)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if i == 0:
            x = layers.MaxPooling2D(2, name="pool0")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"simple_cnn_{width}")
