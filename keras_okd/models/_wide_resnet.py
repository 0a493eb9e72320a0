"""Wide residual networks (Zagoruyko & Komodakis, 2016) for 32x32 images.

WRN-d-k: a 3x3 stem with 16 filters, three groups of n = (d - 4) / 6 pre-activation
basic blocks with 16k, 32k and 64k filters (first block of groups 2 and 3 has stride 2),
then BatchNormalization + ReLU, global average pooling and a linear classifier.
A block whose shape changes uses a 1x1 convolution (no BN) on the pre-activated input
as shortcut, as in the authors' code; convolutions have no bias.

Multi-branch split: trunk = stem + groups 1-2; each branch = group 3 + final BN-ReLU +
global average pooling + linear classifier.
"""

from keras import layers

from keras_okd.models._common import (ModelParts, bn_relu, conv2d, pre_activation_head, stage_output,
                                      stage_split, units_per_stage)

CIFAR_INPUT_SHAPE = (32, 32, 3)


def _wide_block(x, filters, strides, dropout_rate, name, sync):
    equal_in_out = strides == 1 and x.shape[-1] == filters
    pre = bn_relu(x, name, sync, suffix=1)
    y = conv2d(filters, 3, strides, name=f"{name}_conv1")(pre)
    y = bn_relu(y, name, sync, suffix=2)
    if dropout_rate > 0:
        y = layers.Dropout(dropout_rate, name=f"{name}_dropout")(y)
    y = conv2d(filters, 3, name=f"{name}_conv2")(y)
    if equal_in_out:
        shortcut = x
    else:
        shortcut = conv2d(filters, 1, strides, name=f"{name}_shortcut")(pre)
    return layers.Add(name=f"{name}_add")([shortcut, y])


def wide_resnet_parts(
    depth,
    width,
    dropout_rate=0.0,
    num_classes=10,
    synchronized_bn=False,
    name=None,
):
    """Trunk/branch description of a WRN-depth-width (see `wide_resnet`)."""
    n = units_per_stage(depth, "a wide ResNet")
    sync = synchronized_bn
    name = name or f"wrn_{depth}_{width}"

    def group(x, index, prefix):
        filters = 16 * width * 2**index
        for b in range(n):
            strides = 2 if (index > 0 and b == 0) else 1
            x = _wide_block(
                x, filters, strides, dropout_rate, f"{prefix}group{index + 1}_block{b + 1}", sync
            )
        return stage_output(x, index + 1, prefix)

    def stem(x, prefix):
        return conv2d(16, 3, name=f"{prefix}stem_conv")(x)

    trunk, branch = stage_split(stem, group, 3, pre_activation_head(sync))
    return ModelParts(name, trunk, branch, num_classes, 0.0, CIFAR_INPUT_SHAPE)


def wide_resnet(
    depth,
    width,
    dropout_rate=0.0,
    num_classes=10,
    input_shape=CIFAR_INPUT_SHAPE,
    synchronized_bn=False,
    name=None,
):
    """A pre-activation wide ResNet WRN-`depth`-`width` for small images.

    Args:
        depth: total depth, 6n + 4 (16, 22, 28, 40, ...).
        width: widening factor k (filters 16k, 32k, 64k).
        dropout_rate: dropout between the two convs of each block (paper: 0 or 0.3).
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of one image.
        synchronized_bn: use synchronized BatchNormalization (TensorFlow only).
        name: model name; defaults to `"wrn_{depth}_{width}"`.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    >>> model = wide_resnet(16, 2, num_classes=10)
    >>> [model.get_layer(f"stage_{i}").output.shape[-1] for i in (1, 2, 3)]  # 16k, 32k and 64k filters for k = 2
    [32, 64, 128]
    >>> model.output_shape
    (None, 10)
    """
    parts = wide_resnet_parts(depth, width, dropout_rate, num_classes, synchronized_bn, name)
    return parts.build(input_shape, parts.name)
