"""ResNets for 32x32 images (He et al., 2016, Sec. 4.2) and their bottleneck variants.

Basic-block ResNets of depth 6n+2 (ResNet-20/32/56/110): a 3x3 stem with 16 filters,
three stages of n basic blocks with 16, 32 and 64 filters (the first block of stages
2 and 3 has stride 2), global average pooling and one linear layer. When a block
changes shape, the shortcut is a 1x1 convolution + BatchNormalization (projection,
"option B"); a zero-padding "option A" shortcut would have 2,752 fewer parameters.

The bottleneck variants are the ResNets of the ONE / OKDDip / PCL / DKEL code bases:
blocks 1x1 -> 3x3 -> 1x1 with expansion 4 (stage outputs 64, 128, 256 channels).
`resnet110_bottleneck` (blocks [12, 12, 12]) is what those papers call "ResNet-110";
`bottleneck_resnet_2x2x2_w512` (blocks [2, 2, 2], inner width 8x) is what PCL and
DKEL call "WRN-20-8".

Multi-branch split (ONE, PCL, DKEL): trunk = stem + stages 1-2; each branch =
stage 3 + global average pooling + linear classifier.
"""

from keras import layers

from keras_okd.models._common import ModelParts, basic_block, batch_norm, conv2d, stage_output

CIFAR_INPUT_SHAPE = (32, 32, 3)


def _bottleneck_block(x, planes, strides, base_width, name, sync):
    width = planes * base_width // 64
    out_filters = planes * 4
    shortcut = x
    y = conv2d(width, 1, name=f"{name}_conv1")(x)
    y = batch_norm(f"{name}_bn1", sync)(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = conv2d(width, 3, strides, name=f"{name}_conv2")(y)
    y = batch_norm(f"{name}_bn2", sync)(y)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    y = conv2d(out_filters, 1, name=f"{name}_conv3")(y)
    y = batch_norm(f"{name}_bn3", sync)(y)
    if strides != 1 or x.shape[-1] != out_filters:
        shortcut = conv2d(out_filters, 1, strides, name=f"{name}_proj_conv")(x)
        shortcut = batch_norm(f"{name}_proj_bn", sync)(shortcut)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def cifar_resnet_parts(
    blocks_per_stage,
    block="basic",
    base_width=64,
    num_classes=10,
    synchronized_bn=False,
    name="cifar_resnet",
):
    """Trunk/branch description of a CIFAR ResNet (see `cifar_resnet`)."""
    if block not in ("basic", "bottleneck"):
        raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
    blocks_per_stage = tuple(int(n) for n in blocks_per_stage)
    if len(blocks_per_stage) != 3:
        raise ValueError(f"blocks_per_stage needs 3 entries, got {blocks_per_stage}")
    sync = synchronized_bn

    def stage(x, index, prefix):
        planes = 16 * 2**index
        for b in range(blocks_per_stage[index]):
            strides = 2 if (index > 0 and b == 0) else 1
            block_name = f"{prefix}stage{index + 1}_block{b + 1}"
            if block == "basic":
                x = basic_block(x, planes, strides, block_name, sync)
            else:
                x = _bottleneck_block(x, planes, strides, base_width, block_name, sync)
        return stage_output(x, index + 1, prefix)

    def trunk(x, prefix):
        x = conv2d(16, 3, name=f"{prefix}stem_conv")(x)
        x = batch_norm(f"{prefix}stem_bn", sync)(x)
        x = layers.ReLU(name=f"{prefix}stem_relu")(x)
        x = stage(x, 0, prefix)
        return stage(x, 1, prefix)

    def branch(x, prefix):
        x = stage(x, 2, prefix)
        return layers.GlobalAveragePooling2D(name=f"{prefix}pool")(x)

    return ModelParts(name, trunk, branch, num_classes, 0.0, CIFAR_INPUT_SHAPE)


def cifar_resnet(
    blocks_per_stage,
    block="basic",
    base_width=64,
    num_classes=10,
    input_shape=CIFAR_INPUT_SHAPE,
    synchronized_bn=False,
    name="cifar_resnet",
):
    """A three-stage ResNet for small images (16/32/64 base filters).

    Args:
        blocks_per_stage: number of blocks in each of the 3 stages, e.g. `(5, 5, 5)`.
        block: `"basic"` (two 3x3 convs) or `"bottleneck"` (1x1-3x3-1x1, expansion 4).
        base_width: bottleneck inner width is `planes * base_width // 64`
            (64: plain bottleneck; 512: the 8x wide variant). Ignored for basic blocks.
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of one image.
        synchronized_bn: use `BatchNormalization(synchronized=True)` (TensorFlow
            backend; a no-op elsewhere).
        name: model name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    >>> model = cifar_resnet((3, 3, 3), num_classes=10)  # = ResNet-20
    >>> model.output_shape
    (None, 10)
    """
    parts = cifar_resnet_parts(
        blocks_per_stage, block, base_width, num_classes, synchronized_bn, name
    )
    return parts.build(input_shape, name)


def resnet20(num_classes=10, input_shape=CIFAR_INPUT_SHAPE, synchronized_bn=False, name="resnet20"):
    """ResNet-20 for CIFAR (3 basic blocks per stage; 272,474 params at 10 classes).

    Args:
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of one image.
        synchronized_bn: use synchronized BatchNormalization (TensorFlow only).
        name: model name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    >>> resnet20(num_classes=100).output_shape
    (None, 100)
    """
    return cifar_resnet((3, 3, 3), "basic", 64, num_classes, input_shape, synchronized_bn, name)


def resnet32(num_classes=10, input_shape=CIFAR_INPUT_SHAPE, synchronized_bn=False, name="resnet32"):
    """ResNet-32 for CIFAR (5 basic blocks per stage; 466,906 params at 10 classes).

    Args:
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of one image.
        synchronized_bn: use synchronized BatchNormalization (TensorFlow only).
        name: model name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    >>> resnet32(num_classes=100).output_shape
    (None, 100)
    """
    return cifar_resnet((5, 5, 5), "basic", 64, num_classes, input_shape, synchronized_bn, name)


def resnet56(num_classes=10, input_shape=CIFAR_INPUT_SHAPE, synchronized_bn=False, name="resnet56"):
    """ResNet-56 for CIFAR (9 basic blocks per stage; 855,770 params at 10 classes).

    Args:
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of one image.
        synchronized_bn: use synchronized BatchNormalization (TensorFlow only).
        name: model name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    >>> resnet56(num_classes=100).output_shape
    (None, 100)
    """
    return cifar_resnet((9, 9, 9), "basic", 64, num_classes, input_shape, synchronized_bn, name)


def resnet110(num_classes=10, input_shape=CIFAR_INPUT_SHAPE, synchronized_bn=False, name="resnet110"):
    """ResNet-110 for CIFAR with basic blocks (18 per stage; 1,730,714 params at 10 classes).

    This is He et al.'s ResNet-110. The "ResNet-110" of ONE/OKDDip/PCL/DKEL is a
    different network: see `resnet110_bottleneck`.

    Args:
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of one image.
        synchronized_bn: use synchronized BatchNormalization (TensorFlow only).
        name: model name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    >>> resnet110(num_classes=100).output_shape
    (None, 100)
    """
    return cifar_resnet((18, 18, 18), "basic", 64, num_classes, input_shape, synchronized_bn, name)


def resnet110_bottleneck(
    num_classes=10,
    input_shape=CIFAR_INPUT_SHAPE,
    synchronized_bn=False,
    name="resnet110_bottleneck",
):
    """The "ResNet-110" of ONE / OKDDip / PCL / DKEL: bottleneck blocks [12, 12, 12].

    12 bottleneck blocks per stage (3 convs each): 3 * 12 * 3 + 2 = 110 layers.
    Stage outputs have 64, 128 and 256 channels; 1,147,738 params at 10 classes.

    Args:
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of one image.
        synchronized_bn: use synchronized BatchNormalization (TensorFlow only).
        name: model name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    >>> resnet110_bottleneck(num_classes=100).output_shape
    (None, 100)
    """
    return cifar_resnet(
        (12, 12, 12), "bottleneck", 64, num_classes, input_shape, synchronized_bn, name
    )


def bottleneck_resnet_2x2x2_w512(
    num_classes=10,
    input_shape=CIFAR_INPUT_SHAPE,
    synchronized_bn=False,
    name="bottleneck_resnet_2x2x2_w512",
):
    """The network PCL and DKEL call "WRN-20-8": bottleneck blocks [2, 2, 2], width 512.

    Two bottleneck blocks per stage whose 3x3 convolutions are 8x wider than a plain
    bottleneck (inner widths 128, 256, 512, the "width 512" of torchvision's
    `width_per_group` convention); outputs 64, 128, 256 channels; 6,848,090 params
    at 10 classes. It is *not* a Zagoruyko wide ResNet: a WRN has depth 6n + 4 and
    pre-activation basic blocks, so "WRN-20-8" does not exist in that family. The
    name here says what the network is.

    Args:
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of one image.
        synchronized_bn: use synchronized BatchNormalization (TensorFlow only).
        name: model name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    >>> bottleneck_resnet_2x2x2_w512(num_classes=100).output_shape
    (None, 100)
    """
    return cifar_resnet(
        (2, 2, 2), "bottleneck", 512, num_classes, input_shape, synchronized_bn, name
    )
