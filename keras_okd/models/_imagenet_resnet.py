"""ResNet-18 / ResNet-34 (He et al., 2016) for ImageNet and TinyImageNet.

Four stages of basic blocks with 64, 128, 256 and 512 filters ([2, 2, 2, 2] for
ResNet-18, [3, 4, 6, 3] for ResNet-34; first block of stages 2-4 has stride 2; 1x1
conv + BN projection shortcut when the shape changes), global average pooling and a
linear classifier. Two stems:

* `stem="imagenet"` (224x224 inputs, TSB's ImageNet runs): 7x7 stride-2 convolution
  with 64 filters + BN + ReLU + 3x3 stride-2 max-pool, as torchvision. ResNet-18 has
  11,689,512 parameters at 1000 classes, ResNet-34 21,797,672.
* `stem="tiny"` (64x64 inputs, DKEL's TinyImageNet runs): 3x3 stride-1 convolution
  with 64 filters + BN + ReLU, no max-pool (as CIFAR-style ResNet-18s). Stage 4 works
  at 8x8; 7,680 parameters fewer than the ImageNet stem (1,728 vs 9,408 in the stem
  convolution). DKEL does not state its stem; this is the common choice for 64x64
  inputs.

Multi-branch split: trunk = stem + stages 1-3; each branch = stage 4 + global average
pooling + linear classifier.
"""

from keras import layers

from keras_okd.models._common import ModelParts, basic_block, conv_bn_relu, global_pool, stage_output, stage_split

IMAGENET_INPUT_SHAPE = (224, 224, 3)
TINY_INPUT_SHAPE = (64, 64, 3)
STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def imagenet_resnet_parts(
    depth=18,
    stem="imagenet",
    num_classes=1000,
    synchronized_bn=False,
    name=None,
):
    """Trunk/branch description of an ImageNet-style ResNet (see `imagenet_resnet`)."""
    if depth not in STAGE_BLOCKS:
        raise ValueError(f"depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}")
    if stem not in ("imagenet", "tiny"):
        raise ValueError(f"stem must be 'imagenet' or 'tiny', got {stem!r}")
    blocks = STAGE_BLOCKS[depth]
    sync = synchronized_bn

    def stage(x, index, prefix):
        filters = 64 * 2**index
        for b in range(blocks[index]):
            strides = 2 if (index > 0 and b == 0) else 1
            x = basic_block(x, filters, strides, f"{prefix}stage{index + 1}_block{b + 1}", sync)
        return stage_output(x, index + 1, prefix)

    def stem_layers(x, prefix):
        if stem == "imagenet":
            x = conv_bn_relu(x, 64, 7, 2, f"{prefix}stem", sync)
            return layers.MaxPooling2D(3, 2, padding="same", name=f"{prefix}stem_pool")(x)
        return conv_bn_relu(x, 64, 3, 1, f"{prefix}stem", sync)

    trunk, branch = stage_split(stem_layers, stage, len(blocks), global_pool)
    shape = IMAGENET_INPUT_SHAPE if stem == "imagenet" else TINY_INPUT_SHAPE
    name = name or (f"resnet{depth}" if stem == "imagenet" else f"resnet{depth}_tiny")
    return ModelParts(name, trunk, branch, num_classes, 0.0, shape)


def imagenet_resnet(
    depth=18,
    stem="imagenet",
    num_classes=1000,
    input_shape=None,
    synchronized_bn=False,
    name=None,
):
    """ResNet-18/34 with an ImageNet (7x7/2 + max-pool) or TinyImageNet (3x3/1) stem.

    Args:
        depth: 18 or 34.
        stem: `"imagenet"` or `"tiny"`; see the module docstring.
        num_classes: number of output logits.
        input_shape: `(height, width, channels)`; defaults to (224, 224, 3) for the
            ImageNet stem and (64, 64, 3) for the tiny stem.
        synchronized_bn: use synchronized BatchNormalization (TensorFlow only).
        name: model name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    >>> imagenet_resnet(18, "tiny", num_classes=200).output_shape
    (None, 200)
    """
    parts = imagenet_resnet_parts(depth, stem, num_classes, synchronized_bn, name)
    return parts.build(input_shape, parts.name)
