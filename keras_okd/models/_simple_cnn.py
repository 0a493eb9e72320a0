"""A small convolutional network for small images (the bundled 8x8 digits, quick tests).

Multi-branch split: trunk = first conv block + max-pool; each branch = second conv block
+ max-pool + flatten + linear classifier.

The head flattens the last feature map instead of averaging it: on 8x8 digits a global average of a batch-normalised
map carries so little per-image signal that the network is extremely sensitive to the difference between batch and
moving statistics (measured: validation accuracy stuck near 10% in inference mode while training-mode accuracy was
above 90%).
"""

from keras import layers

from keras_okd.models._common import ModelParts, batch_norm, stage_output, sync_supported


def simple_cnn_parts(num_classes=10, width=32, synchronized_bn=False, name=None):
    """Trunk/branch description of `simple_cnn` (used by `multi_branch`)."""
    sync = sync_supported(synchronized_bn)

    def conv_block(x, i, filters, prefix):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{prefix}conv{i}")(x)
        x = batch_norm(name=f"{prefix}bn{i}", synchronized_bn=sync)(x)
        return layers.ReLU(name=f"{prefix}relu{i}")(x)

    def trunk(x, prefix):
        x = stage_output(conv_block(x, 0, width, prefix), 1, prefix)
        return layers.MaxPooling2D(2, name=f"{prefix}pool0")(x)

    def branch(x, prefix):
        x = stage_output(conv_block(x, 1, 2 * width, prefix), 2, prefix)
        x = layers.MaxPooling2D(2, name=f"{prefix}pool1")(x)
        return layers.Flatten(name=f"{prefix}pool")(x)  # the features before the classifier, named as in the zoo

    return ModelParts(name or f"simple_cnn_{width}", trunk, branch, num_classes, 0.0, (8, 8, 1))


def simple_cnn(num_classes=10, input_shape=(8, 8, 1), width=32, name=None, synchronized_bn=False):
    """Two conv-BN-ReLU-max-pool blocks, flatten, and a linear classifier: a fast student for small images.

    Args:
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of one image.
        width: filters of the first conv block; the second has `2 * width`.
        name: model name; defaults to `"simple_cnn_{width}"`.
        synchronized_bn: use synchronized BatchNormalization (TensorFlow only).

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    >>> model = simple_cnn(num_classes=10, input_shape=(8, 8, 1), width=16)
    >>> model.output_shape
    (None, 10)
    """
    parts = simple_cnn_parts(num_classes, width, synchronized_bn, name)
    return parts.build(input_shape, parts.name)
