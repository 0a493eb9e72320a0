"""Multi-branch students (ONE, PCL, DKEL): one shared trunk, several peer branches.

`multi_branch(name, m)` builds ONE functional `keras.Model` made of plain Keras parts:

* a sub-model named `"trunk"` (image -> trunk feature map), the network's stem and
  early stages, shared by all branches;
* sub-models named `"branch_0"` ... `"branch_{m-1}"` (trunk feature map ->
  `[pooled features, logits]`), each the network's last stage, global average pooling
  and classifier, with its own weights;
* a `GlobalAveragePooling2D` named `"shared_pool"` on the trunk output.

The split per family (trunk | branch):

| family | trunk | each branch |
|---|---|---|
| CIFAR ResNets (basic and bottleneck) | stem + stages 1-2 | stage 3 + pool + FC |
| wide ResNets | stem + groups 1-2 | group 3 + BN-ReLU + pool + FC |
| VGG | conv groups 1-4 | conv group 5 + pool + FC |
| MobileNetV2 | stem + groups up to 96 channels | 160/320 groups + 1x1 conv + pool + FC |
| DenseNet-BC | stem + dense blocks 1-2 + transitions | dense block 3 + BN-ReLU + pool + FC |
| ResNet-18/34 (ImageNet, tiny) | stem + stages 1-3 | stage 4 + pool + FC |
| simple_cnn | conv block 1 + max-pool | conv block 2 + pool + FC |

Because trunk and branches are built by the same functions as the single network,
trunk + one branch has exactly the single network's parameters, and
`extract_branch` returns that network as a standalone model sharing the weights.
"""

import keras
from keras import layers

from keras_okd.models.gradient_scale import GradientScale
from keras_okd.models.registry import get_parts, lookup

TRUNK_NAME = "trunk"
SHARED_POOL_NAME = "shared_pool"
RESCALING_NAME = "backprop_rescaling"


def branch_name(index):
    """Name of the sub-model of branch `index` in a `multi_branch` model.

    Args:
        index: branch index, 0-based.

    Returns:
        `"branch_{index}"`.

    Example:

    >>> branch_name(2)
    'branch_2'
    """
    return f"branch_{int(index)}"


def multi_branch(
    name,
    num_branches=3,
    num_classes=10,
    input_shape=None,
    per_branch_inputs=False,
    synchronized_bn=False,
    gradient_scale=None,
    **kwargs,
):
    """A multi-branch student: shared trunk + `num_branches` peer branches of a zoo net.

    Args:
        name: a zoo name (see `names()`); the split per family is in this module's
            docstring (for CIFAR ResNets: trunk = stem + stages 1-2, branch = stage 3 +
            global average pooling + linear classifier).
        num_branches: m, the number of peer branches (>= 1).
        num_classes: logits per branch.
        input_shape: `(height, width, channels)`; defaults per family as in `get`.
        per_branch_inputs: if True the model takes a list of `num_branches` images
            (one augmented view per branch); the trunk (shared weights) runs on each
            view and branch i consumes trunk(view_i). Note that in training mode the
            trunk's BatchNormalization moving statistics are then updated once per view.
        synchronized_bn: use `BatchNormalization(synchronized=True)` (TensorFlow only).
        gradient_scale: None, or a factor in (0, 1] applied to the gradient flowing from the branches back into
            the trunk by a weightless `GradientScale` layer named `"backprop_rescaling"` (collaborative learning's
            backpropagation rescaling uses `1 / num_branches`; see `scale_trunk_gradients`). The model then needs
            keras_okd to load as a whole; `extract_branch` still gives plain Keras networks.
        **kwargs: passed to the family (e.g. `width` for `simple_cnn`).

    Returns:
        A functional `keras.Model` with inputs one image tensor (or a list of
        `num_branches` when `per_branch_inputs`) and outputs the dict
        `{"logits": [m x (B, C)], "features": [m x (B, F)],
        "shared_features": (B, F0)}`: each branch's logits and pooled features, and
        the globally pooled trunk output (of view 0 with per-branch inputs).
        Sub-models: `"trunk"`, `"branch_0"` ... (see `extract_branch`).

    Example:

    >>> model = multi_branch("resnet32", num_branches=3, num_classes=100)
    >>> import numpy as np
    >>> out = model(np.zeros((2, 32, 32, 3), "float32"))
    >>> [tuple(t.shape) for t in out["logits"]]
    [(2, 100), (2, 100), (2, 100)]
    >>> tuple(out["shared_features"].shape)
    (2, 32)
    """
    num_branches = int(num_branches)
    if num_branches < 1:
        raise ValueError(f"num_branches must be >= 1, got {num_branches}")
    entry = lookup(name)
    parts = get_parts(name, num_classes=num_classes, synchronized_bn=synchronized_bn, **kwargs)
    shape = tuple(input_shape) if input_shape is not None else entry.input_shape

    trunk_input = keras.Input(shape=shape, name="trunk_input")
    trunk = keras.Model(trunk_input, parts.trunk(trunk_input, ""), name=TRUNK_NAME)
    feature_map_shape = tuple(trunk.outputs[0].shape[1:])

    branches = []
    for i in range(num_branches):
        prefix = f"b{i}_"
        branch_input = keras.Input(shape=feature_map_shape, name=f"{prefix}input")
        features = parts.branch(branch_input, prefix)
        logits = parts.classifier(features, prefix)
        branches.append(keras.Model(branch_input, [features, logits], name=branch_name(i)))

    pool = layers.GlobalAveragePooling2D(name=SHARED_POOL_NAME)
    return _assemble(trunk, branches, pool, shape, per_branch_inputs, gradient_scale,
                     name=f"{parts.name}_{num_branches}branch")


def _assemble(trunk, branches, pool, shape, per_branch_inputs, gradient_scale, name):
    """The multi-branch functional model from its trunk, branch and pooling layers (new or reused)."""
    m = len(branches)
    if per_branch_inputs:
        inputs = [keras.Input(shape=shape, name=f"view_{i}") for i in range(m)]
        trunk_outputs = [trunk(view) for view in inputs]
    else:
        inputs = keras.Input(shape=shape, name="image")
        trunk_outputs = [trunk(inputs)] * m
    branch_inputs = trunk_outputs
    if gradient_scale is not None:  # one weightless layer, applied to each distinct trunk output
        rescale = GradientScale(gradient_scale, name=RESCALING_NAME)
        scaled = {id(t): rescale(t) for t in trunk_outputs}
        branch_inputs = [scaled[id(t)] for t in trunk_outputs]

    all_logits, all_features = [], []
    for branch, branch_input in zip(branches, branch_inputs):
        features, logits = branch(branch_input)
        all_features.append(features)
        all_logits.append(logits)
    shared = pool(trunk_outputs[0])  # not rescaled: a head on the shared features (ONE's gate) is not a branch
    outputs = {"logits": all_logits, "features": all_features, "shared_features": shared}
    return keras.Model(inputs, outputs, name=name)


def scale_trunk_gradients(model, scale=None):
    """The same multi-branch network, sharing `model`'s layers and weights, whose branches receive the trunk's
    output through a `GradientScale` layer: collaborative learning's backpropagation rescaling (Song and Chai,
    NeurIPS 2018), by default `1 / num_branches`.

    Forward outputs are identical to `model`'s; in training, the gradient that flows from the branches back into
    the trunk is multiplied by `scale`, so the shared layers get the mean of the branches' gradients instead of their
    sum, while each branch's own layers get its full gradient. `model` itself is unchanged (and still saves as plain
    Keras); the returned model contains `GradientScale`, so saving it whole needs keras_okd to load.
    `extract_branch` of either gives the same plain trunk + branch network.

    Args:
        model: a model returned by `multi_branch` without `gradient_scale`.
        scale: the gradient factor in (0, 1]; defaults to `1 / num_branches`.

    Returns:
        A functional `keras.Model` with `model`'s inputs and outputs.

    Raises:
        ValueError: `model` is not a `multi_branch` model, or already rescales its trunk's gradients.

    Example:

    >>> student = multi_branch("simple_cnn", num_branches=3, input_shape=(8, 8, 1))
    >>> rescaled = scale_trunk_gradients(student)
    >>> rescaled.get_layer("backprop_rescaling").scale == 1 / 3
    True
    """
    m = num_branches_of(model)
    try:
        trunk, pool = model.get_layer(TRUNK_NAME), model.get_layer(SHARED_POOL_NAME)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no '{TRUNK_NAME}' / '{SHARED_POOL_NAME}' layers; "
                         "was it built by keras_okd.models.multi_branch?") from None
    if trunk_gradient_scale(model) is not None:
        raise ValueError(f"model {model.name!r} already rescales its trunk's gradients "
                         f"(scale {trunk_gradient_scale(model)}); pass it as it is.")
    scale = 1.0 / m if scale is None else scale
    branches = [model.get_layer(branch_name(i)) for i in range(m)]
    shape = tuple(trunk.inputs[0].shape[1:])
    return _assemble(trunk, branches, pool, shape, len(model.inputs) > 1, scale, name=model.name)


def trunk_gradient_scale(model):
    """The factor by which `model` scales the gradient from its branches into its trunk, or None (no rescaling).

    Example:

    >>> trunk_gradient_scale(multi_branch("simple_cnn", 2, input_shape=(8, 8, 1), gradient_scale=0.5))
    0.5
    """
    found = [layer.scale for layer in model.layers if isinstance(layer, GradientScale)]
    return found[0] if found else None


def num_branches_of(model):
    """Number of branches of a `multi_branch` model.

    Args:
        model: a model returned by `multi_branch`.

    Returns:
        The number of `"branch_{i}"` sub-models.

    Example:

    >>> num_branches_of(multi_branch("simple_cnn", num_branches=2))
    2
    """
    count = 0
    while True:
        try:
            model.get_layer(branch_name(count))
        except ValueError:
            return count
        count += 1


def extract_branch(model, index, name=None):
    """A standalone image -> logits model: the trunk and branch `index` of `model`.

    The result reuses the multi-branch model's layers (same weight variables, so it
    follows further training), has exactly the single network's parameter count,
    contains only plain Keras layers (two nested functional sub-models, "trunk" and
    "branch_{index}"), and saves to a `.keras` file that loads without keras_okd.
    Its weights come in the same order as the single network's, so
    `get(name).set_weights(branch.get_weights())` makes an independent flat copy.

    Args:
        model: a model returned by `multi_branch` (any `per_branch_inputs`).
        index: which branch, 0-based.
        name: name of the new model; defaults to `"{model.name}_branch{index}"`.

    Returns:
        A functional `keras.Model` mapping one image batch to `(B, C)` logits.

    Raises:
        ValueError: `model` has no trunk/branch sub-models, or `index` is out of range.

    Example:

    >>> student = multi_branch("resnet20", num_branches=3)
    >>> peer = extract_branch(student, 1)
    >>> peer.output_shape
    (None, 10)
    """
    m = num_branches_of(model)
    try:
        trunk = model.get_layer(TRUNK_NAME)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no '{TRUNK_NAME}' sub-model; "
                         "was it built by multi_branch?") from None
    index = int(index)
    if not 0 <= index < m:
        raise ValueError(f"branch index {index} out of range for {m} branches")
    branch = model.get_layer(branch_name(index))
    inputs = keras.Input(shape=tuple(trunk.inputs[0].shape[1:]), name="image")
    _, logits = branch(trunk(inputs))
    return keras.Model(inputs, logits, name=name or f"{model.name}_branch{index}")
