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

from keras_okd.models._common import (ModelParts, basic_block, conv_bn_relu, global_pool, residual_sum, stage_output,
                                      stage_split)

CIFAR_INPUT_SHAPE = (32, 32, 3)


def _bottleneck_block(x, planes, strides, base_width, name, sync):
    width = planes * base_width // 64
    out_filters = planes * 4
    y = conv_bn_relu(x, width, 1, 1, name, sync, suffix=1)
    y = conv_bn_relu(y, width, 3, strides, name, sync, suffix=2)
    y = conv_bn_relu(y, out_filters, 1, 1, name, sync, suffix=3, relu=False)
    return residual_sum(x, y, strides, name, sync)


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

    def stem(x, prefix):
        return conv_bn_relu(x, 16, 3, 1, f"{prefix}stem", sync)

    trunk, branch = stage_split(stem, stage, 3, global_pool)
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
