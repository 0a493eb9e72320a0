"""DenseNet-BC for 32x32 images (Huang et al., 2017).

DenseNet-BC-depth-k: a 3x3 stem with `2k` filters (24 for k = 12), three dense blocks
of n = (depth - 4) / 6 bottleneck layers (BN-ReLU-1x1 conv to 4k, BN-ReLU-3x3 conv to
k, concatenated to the input), transitions (BN-ReLU-1x1 conv compressing channels by
0.5, 2x2 average pooling) between blocks, then BN-ReLU, global average pooling and a
linear classifier. Convolutions have no bias.

Multi-branch split: trunk = stem + dense blocks 1-2 with their transitions; each branch
= dense block 3 + final BN-ReLU + global average pooling + linear classifier.
"""

import math

from keras import layers

from keras_okd.models._common import (ModelParts, bn_relu, conv2d, pre_activation_head, stage_output,
                                      stage_split, units_per_stage)

CIFAR_INPUT_SHAPE = (32, 32, 3)
DENSE_BLOCKS = 3


def _dense_layer(x, growth_rate, bottleneck_width, name, sync):
    y = bn_relu(x, name, sync, suffix=1)
    y = conv2d(bottleneck_width * growth_rate, 1, name=f"{name}_conv1")(y)
    y = bn_relu(y, name, sync, suffix=2)
    y = conv2d(growth_rate, 3, name=f"{name}_conv2")(y)
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([x, y])


def densenet_bc_parts(
    depth=40,
    growth_rate=12,
    compression=0.5,
    initial_features=None,
    num_classes=10,
    synchronized_bn=False,
    name=None,
):
    """Trunk/branch description of a DenseNet-BC (see `densenet_bc`)."""
    n = units_per_stage(depth, "DenseNet-BC")
    initial_features = initial_features or 2 * growth_rate
    sync = synchronized_bn

    def dense_block(x, index, prefix):
        for j in range(n):
            x = _dense_layer(x, growth_rate, 4, f"{prefix}block{index + 1}_layer{j + 1}", sync)
        return stage_output(x, index + 1, prefix)

    def transition(x, index, prefix):
        tname = f"{prefix}transition{index + 1}"
        filters = int(math.floor(x.shape[-1] * compression))
        x = bn_relu(x, tname, sync)
        x = conv2d(filters, 1, name=f"{tname}_conv")(x)
        return layers.AveragePooling2D(2, name=f"{tname}_pool")(x)

    def stage(x, index, prefix):  # a dense block, then a transition (none after the last block)
        x = dense_block(x, index, prefix)
        return transition(x, index, prefix) if index < DENSE_BLOCKS - 1 else x

    def stem(x, prefix):
        return conv2d(initial_features, 3, name=f"{prefix}stem_conv")(x)

    trunk, branch = stage_split(stem, stage, DENSE_BLOCKS, pre_activation_head(sync))
    name = name or f"densenet_bc_{depth}_{growth_rate}"
    return ModelParts(name, trunk, branch, num_classes, 0.0, CIFAR_INPUT_SHAPE)


def densenet_bc(
    depth=40,
    growth_rate=12,
    compression=0.5,
    initial_features=None,
    num_classes=10,
    input_shape=CIFAR_INPUT_SHAPE,
    synchronized_bn=False,
    name=None,
):
    """A DenseNet-BC (bottleneck layers + compression) for small images.

    Args:
        depth: total depth, 6n + 4 (n bottleneck layers per dense block).
        growth_rate: k, channels added by each layer.
        compression: channel factor of the transitions.
        initial_features: stem filters; defaults to `2 * growth_rate`.
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of one image.
        synchronized_bn: use synchronized BatchNormalization (TensorFlow only).
        name: model name; defaults to `"densenet_bc_{depth}_{growth_rate}"`.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    >>> model = densenet_bc(40, 12, num_classes=10)  # 24 stem filters, 6 x 12 more per block, halved by a transition
    >>> [model.get_layer(n).output.shape[-1] for n in ("stage_1", "transition1_pool", "stage_2", "pool")]
    [96, 48, 120, 132]
    >>> model.output_shape
    (None, 10)
    """
    parts = densenet_bc_parts(
        depth, growth_rate, compression, initial_features, num_classes, synchronized_bn, name
    )
    return parts.build(input_shape, parts.name)
