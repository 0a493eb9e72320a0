"""VGG networks with BatchNormalization for 32x32 images (Simonyan & Zisserman, 2015).

CIFAR variant: the configuration's 3x3 convolutions (with bias, as in torchvision's
`vgg*_bn`) each followed by BatchNormalization and ReLU, a 2x2 max-pool after each of the
five groups, global average pooling (the 32x32 input is 1x1 after five pools, so this
equals a flatten) and ONE linear classifier 512 -> classes.

Multi-branch split: trunk = conv groups 1-4; each branch = conv group 5 (+ its pool) +
global average pooling + linear classifier (as the OKDDip code splits VGG-16).
"""

from keras import layers

from keras_okd.models._common import ModelParts, conv_bn_relu, global_pool, stage_output, stage_split

CIFAR_INPUT_SHAPE = (32, 32, 3)

VGG_GROUPS = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: (
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}


def vgg_parts(depth, num_classes=10, synchronized_bn=False, name=None):
    """Trunk/branch description of a VGG (see `vgg`)."""
    if depth not in VGG_GROUPS:
        raise ValueError(f"VGG depth must be one of {sorted(VGG_GROUPS)}, got {depth}")
    groups = VGG_GROUPS[depth]
    sync = synchronized_bn

    def group(x, index, prefix):
        for j, filters in enumerate(groups[index]):
            x = conv_bn_relu(x, filters, 3, 1, f"{prefix}group{index + 1}", sync, suffix=j + 1, use_bias=True)
        x = stage_output(x, index + 1, prefix)
        return layers.MaxPooling2D(2, name=f"{prefix}group{index + 1}_pool")(x)

    trunk, branch = stage_split(None, group, len(groups), global_pool)
    return ModelParts(name or f"vgg{depth}", trunk, branch, num_classes, 0.0, CIFAR_INPUT_SHAPE)


def vgg(depth, num_classes=10, input_shape=CIFAR_INPUT_SHAPE, synchronized_bn=False, name=None):
    """A VGG-`depth` with BatchNormalization and one linear classifier, for CIFAR.

    Args:
        depth: 11, 13, 16 or 19.
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of one image (at least 32x32).
        synchronized_bn: use synchronized BatchNormalization (TensorFlow only).
        name: model name; defaults to `"vgg{depth}"`.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    >>> vgg(11, num_classes=10).output_shape
    (None, 10)
    """
    parts = vgg_parts(depth, num_classes, synchronized_bn, name)
    return parts.build(input_shape, parts.name)
