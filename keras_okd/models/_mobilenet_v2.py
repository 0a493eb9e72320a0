"""MobileNetV2 (Sandler et al., 2018) for ImageNet and for CIFAR.

Two variants, both with a stride-2 3x3 stem, inverted residual blocks
(1x1 expand -> 3x3 depthwise -> 1x1 linear projection, ReLU6, residual when the shape
is kept), a 1x1 convolution to the last layer, global average pooling and a linear
classifier:

* ImageNet (`mobilenet_v2`, defaults): torchvision's network. Channel counts are
  rounded to multiples of 8; blocks with expansion 1 have no expand convolution;
  dropout 0.2 before the classifier. Width 1.0: 3,504,872 params at 1000 classes.
* CIFAR (`mobilenet_v2_x0_5`): the MobileNetV2 of the CRD / TSB CIFAR benchmarks.
  Expansion 6 in all blocks but the first (expansion 1), channels truncated
  (`int(c * width)`, no rounding), every block has an expand convolution (even with
  expansion 1), last layer 1280 (not scaled down), strides
  (stem 2; groups 1, 1, 2, 2, 1, 2, 1), so a 32x32 image ends at 2x2; no dropout.
  Width 0.5: 697,546 params at 10 classes.

Block settings (expansion t, channels c, repeats n, stride s) follow the paper's Table 2.

Multi-branch split: trunk = stem + the groups up to the 96-channel group (13 blocks);
each branch = the 160- and 320-channel groups + last 1x1 conv + global average pooling
+ classifier.
"""

from keras import layers

from keras_okd.models._common import ModelParts, batch_norm, conv2d, depthwise_conv2d, stage_output

IMAGENET_INPUT_SHAPE = (224, 224, 3)
CIFAR_INPUT_SHAPE = (32, 32, 3)

# (expansion, channels, repeats, stride)
IMAGENET_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
CIFAR_SETTING = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                 (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
_TRUNK_GROUPS = 5  # groups 1-5 (up to 96 channels) are shared
# Named stage outputs (`stage_1` ... `stage_4`): the last group at each resolution (0-based group index -> stage).
_STAGE_ENDS = {1: 1, 2: 2, 4: 3, 6: 4}


def _make_divisible(value, divisor=8):
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def _inverted_residual(x, out_channels, strides, expansion, always_expand, name, sync):
    in_channels = x.shape[-1]
    hidden = in_channels * expansion
    y = x
    if expansion != 1 or always_expand:
        y = conv2d(hidden, 1, name=f"{name}_expand_conv")(y)
        y = batch_norm(f"{name}_expand_bn", sync)(y)
        y = layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
    y = depthwise_conv2d(3, strides, name=f"{name}_dw_conv")(y)
    y = batch_norm(f"{name}_dw_bn", sync)(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = conv2d(out_channels, 1, name=f"{name}_project_conv")(y)
    y = batch_norm(f"{name}_project_bn", sync)(y)
    if strides == 1 and in_channels == out_channels:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet_v2_parts(
    width_multiplier=1.0,
    num_classes=1000,
    variant="imagenet",
    dropout_rate=None,
    last_channels=1280,
    synchronized_bn=False,
    name=None,
):
    """Trunk/branch description of a MobileNetV2 (see `mobilenet_v2`)."""
    if variant not in ("imagenet", "cifar"):
        raise ValueError(f"variant must be 'imagenet' or 'cifar', got {variant!r}")
    sync = synchronized_bn
    if variant == "imagenet":
        setting, round_fn, always_expand = IMAGENET_SETTING, _make_divisible, False
        stem = _make_divisible(32 * width_multiplier)
        last = _make_divisible(last_channels * max(1.0, width_multiplier))
        default_dropout, shape = 0.2, IMAGENET_INPUT_SHAPE
    else:
        setting, round_fn, always_expand = CIFAR_SETTING, int, True
        stem = int(32 * width_multiplier)
        last = int(last_channels * width_multiplier) if width_multiplier > 1.0 else last_channels
        default_dropout, shape = 0.0, CIFAR_INPUT_SHAPE
    dropout_rate = default_dropout if dropout_rate is None else dropout_rate

    def groups(x, indices, prefix):
        for g in indices:
            expansion, channels, repeats, stride = setting[g]
            out = round_fn(channels * width_multiplier)
            for r in range(repeats):
                x = _inverted_residual(
                    x, out, stride if r == 0 else 1, expansion, always_expand,
                    f"{prefix}group{g + 1}_block{r + 1}", sync,
                )
            if g in _STAGE_ENDS:
                x = stage_output(x, _STAGE_ENDS[g], prefix)
        return x

    def trunk(x, prefix):
        x = conv2d(stem, 3, 2, name=f"{prefix}stem_conv")(x)
        x = batch_norm(f"{prefix}stem_bn", sync)(x)
        x = layers.ReLU(6.0, name=f"{prefix}stem_relu")(x)
        return groups(x, range(_TRUNK_GROUPS), prefix)

    def branch(x, prefix):
        x = groups(x, range(_TRUNK_GROUPS, len(setting)), prefix)
        x = conv2d(last, 1, name=f"{prefix}last_conv")(x)
        x = batch_norm(f"{prefix}last_bn", sync)(x)
        x = layers.ReLU(6.0, name=f"{prefix}last_relu")(x)
        return layers.GlobalAveragePooling2D(name=f"{prefix}pool")(x)

    if name is None:
        name = "mobilenet_v2" if variant == "imagenet" else "mobilenet_v2_cifar"
        if width_multiplier != 1.0:
            name += "_x" + f"{width_multiplier:g}".replace(".", "_")
    return ModelParts(name, trunk, branch, num_classes, dropout_rate, shape)


def mobilenet_v2(
    width_multiplier=1.0,
    num_classes=1000,
    input_shape=None,
    variant="imagenet",
    dropout_rate=None,
    synchronized_bn=False,
    name=None,
):
    """MobileNetV2 with a width multiplier, ImageNet (torchvision) or CIFAR variant.

    Args:
        width_multiplier: scales every layer's channels (the last layer only when > 1).
        num_classes: number of output logits.
        input_shape: `(height, width, channels)`; defaults to (224, 224, 3) for
            `variant="imagenet"` and (32, 32, 3) for `variant="cifar"`.
        variant: `"imagenet"` (torchvision's network) or `"cifar"` (CRD/TSB CIFAR
            network); see the module docstring for the differences.
        dropout_rate: dropout before the classifier; defaults to 0.2 (ImageNet) or
            0 (CIFAR).
        synchronized_bn: use synchronized BatchNormalization (TensorFlow only).
        name: model name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    >>> model = mobilenet_v2(1.0, num_classes=1000)
    >>> model.output_shape
    (None, 1000)
    """
    parts = mobilenet_v2_parts(
        width_multiplier, num_classes, variant, dropout_rate, 1280, synchronized_bn, name
    )
    return parts.build(input_shape, parts.name)
