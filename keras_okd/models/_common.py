"""Shared building blocks of the model zoo (private).

Every network in the zoo is described by a `ModelParts`: a *trunk* (stem and the
early stages) and a *branch* (the last stage, global pooling, classifier). A single
network is `branch(trunk(image))`; a multi-branch student (`multi_branch`) shares one
trunk between several copies of the branch. Both are built from the same functions,
so a branch extracted from a multi-branch model has exactly the single network's
parameters.

Conventions (PyTorch's defaults, so results are comparable with the papers' code):
BatchNormalization with momentum 0.9 (PyTorch momentum 0.1) and epsilon 1e-5,
He-normal initialisation for convolutions, convolutions without bias unless a model
says otherwise, "same" padding.
"""

import warnings

import keras

from keras_okd.backend import synchronized_batch_norm_supported
from keras import layers

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
CONV_INITIALIZER = "he_normal"

_warned_sync = []


def sync_supported(synchronized_bn):
    """Return the `synchronized` flag usable by `BatchNormalization` here.

    Keras only implements synchronized batch statistics on the TensorFlow backend
    (MirroredStrategy and friends). Under JAX, Keras' distribution API runs one
    program over the global batch, so batch statistics are already global; the
    torch backend has no multi-replica training in Keras. On those backends the
    option is therefore a no-op (with a one-time warning) instead of an error.
    """
    if not synchronized_bn:
        return False
    if synchronized_batch_norm_supported():
        return True
    if not _warned_sync:
        _warned_sync.append(True)
        warnings.warn(
            "synchronized_bn=True only changes BatchNormalization on the "
            f"TensorFlow backend; ignored on '{keras.backend.backend()}'.",
            stacklevel=3,
        )
    return False


def conv2d(filters, kernel_size, strides=1, name=None, use_bias=False, groups=1):
    """A `Conv2D` with the zoo's defaults ("same" padding, He-normal, no bias)."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=use_bias,
        groups=groups,
        kernel_initializer=CONV_INITIALIZER,
        name=name,
    )


def depthwise_conv2d(kernel_size, strides=1, name=None):
    """A bias-free `DepthwiseConv2D` with He-normal initialisation."""
    return layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        depthwise_initializer=CONV_INITIALIZER,
        name=name,
    )


def stage_output(x, index, prefix=""):
    """Name the output of stage `index` (1-based): an `Identity` layer called `{prefix}stage_{index}`.

    The zoo's feature layers (read by the feature-distillation parts through `layers=`) are `stage_1`, `stage_2`, ...
    and `pool`, the pooled features before the classifier. An `Identity` layer adds a name, not computation or
    parameters.
    """
    return layers.Identity(name=f"{prefix}stage_{index}")(x)


def batch_norm(name=None, synchronized_bn=False):
    """A `BatchNormalization` with PyTorch's momentum/epsilon."""
    return layers.BatchNormalization(
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        synchronized=sync_supported(synchronized_bn),
        name=name,
    )


def units_per_stage(depth, network):
    """n, the units of two convolutions per stage (DenseNet-BC's bottleneck layers, the wide ResNets' blocks), of a
    depth `6n + 4` (n >= 1), the depth rule of both families."""
    if (depth - 4) % 6 != 0 or depth < 10:
        raise ValueError(f"{network} needs depth = 6n + 4 (n >= 1), got {depth}")
    return (depth - 4) // 6


def conv_bn_relu(x, filters, kernel_size, strides, name, sync, suffix="", relu=True, use_bias=False):
    """`{name}_conv{suffix}` -> `{name}_bn{suffix}` -> `{name}_relu{suffix}` (no ReLU with `relu=False`): the
    post-activation unit of the ResNets' stems and blocks and of VGG's groups."""
    x = conv2d(filters, kernel_size, strides, name=f"{name}_conv{suffix}", use_bias=use_bias)(x)
    x = batch_norm(f"{name}_bn{suffix}", sync)(x)
    return layers.ReLU(name=f"{name}_relu{suffix}")(x) if relu else x


def bn_relu(x, name, sync, suffix=""):
    """`{name}_bn{suffix}` -> `{name}_relu{suffix}`: the pre-activation of the DenseNet and wide-ResNet layers, and
    their final activation before the pooling."""
    x = batch_norm(f"{name}_bn{suffix}", sync)(x)
    return layers.ReLU(name=f"{name}_relu{suffix}")(x)


def global_pool(x, prefix=""):
    """Global average pooling named `{prefix}pool`, the pooled features before the classifier (the zoo's `pool`)."""
    return layers.GlobalAveragePooling2D(name=f"{prefix}pool")(x)


def pre_activation_head(sync):
    """The head of the pre-activation networks (DenseNet-BC, wide ResNets), `fn(x, prefix)`: a final BN-ReLU
    (`{prefix}final_bn`, `{prefix}final_relu`), then `global_pool`."""

    def head(x, prefix):
        return global_pool(bn_relu(x, f"{prefix}final", sync), prefix)

    return head


def stage_split(stem, stage, num_stages, head):
    """The zoo's multi-branch split of a network made of a stem, stages 0 .. `num_stages - 1` and a head: the trunk
    is the stem and every stage but the last, a branch is the last stage and the head.

    Args:
        stem: `fn(x, prefix) -> tensor`, or None for a network without a stem.
        stage: `fn(x, index, prefix) -> tensor`, stage `index` (0-based).
        num_stages: number of stages.
        head: `fn(x, prefix) -> tensor (B, F)`, from the last stage's output to the pooled features (`global_pool`).

    Returns:
        `(trunk, branch)`, the functions of a `ModelParts`.
    """

    def trunk(x, prefix):
        if stem is not None:
            x = stem(x, prefix)
        for index in range(num_stages - 1):
            x = stage(x, index, prefix)
        return x

    def branch(x, prefix):
        return head(stage(x, num_stages - 1, prefix), prefix)

    return trunk, branch


class ModelParts:
    """How to build one network as trunk + branch (private to the zoo).

    Args:
        name: default model name.
        trunk: `fn(x, prefix) -> tensor`, applies the shared stem/early stages.
        branch: `fn(x, prefix) -> tensor (B, F)`, applies the last stage and global
            pooling; returns the pooled features.
        num_classes: number of logits of the classifier.
        dropout_rate: dropout before the classifier (0 for none).
        default_input_shape: input shape when none is given.
    """

    def __init__(
        self,
        name,
        trunk,
        branch,
        num_classes,
        dropout_rate=0.0,
        default_input_shape=(32, 32, 3),
    ):
        self.name = name
        self.trunk = trunk
        self.branch = branch
        self.num_classes = int(num_classes)
        self.dropout_rate = float(dropout_rate)
        self.default_input_shape = tuple(default_input_shape)

    def classifier(self, features, prefix=""):
        """Applies optional dropout and the linear classifier to pooled features."""
        x = features
        if self.dropout_rate > 0:
            x = layers.Dropout(self.dropout_rate, name=f"{prefix}dropout")(x)
        return layers.Dense(self.num_classes, name=f"{prefix}logits")(x)

    def build(self, input_shape=None, name=None):
        """Builds the single network: a functional model image -> logits."""
        shape = tuple(input_shape or self.default_input_shape)
        inputs = keras.Input(shape=shape, name="image")
        features = self.branch(self.trunk(inputs, ""), "")
        logits = self.classifier(features, "")
        return keras.Model(inputs, logits, name=name or self.name)


def basic_block(x, filters, strides, name, sync):
    """The ResNet basic block (two 3x3 conv-BN, ReLU between), with a 1x1 conv + BN projection shortcut when the
    shape changes; shared by the CIFAR and the ImageNet ResNets."""
    y = conv_bn_relu(x, filters, 3, strides, name, sync, suffix=1)
    y = conv_bn_relu(y, filters, 3, 1, name, sync, suffix=2, relu=False)
    return residual_sum(x, y, strides, name, sync)


def residual_sum(x, y, strides, name, sync):
    """`ReLU(shortcut(x) + y)`, the end of a post-activation ResNet block: the shortcut is `x` itself, or a 1x1 conv +
    BN projection when the block changes the shape (`strides` or channels)."""
    shortcut = x
    if strides != 1 or x.shape[-1] != y.shape[-1]:
        shortcut = conv2d(y.shape[-1], 1, strides, name=f"{name}_proj_conv")(x)
        shortcut = batch_norm(f"{name}_proj_bn", sync)(shortcut)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)
