"""The zoo's named feature layers, and how to list them.

Every zoo network names its stage outputs `stage_1`, `stage_2`, ... (`Identity` layers: a name, no computation, no
parameters) and its pooled features before the classifier `pool`. A feature-distillation part reads them by name
(`layers=("stage_3",)`); any functional Keras model works the same way with its own layer names (see
`model.summary()`).

| family | stage_k is | stages |
|---|---|---|
| CIFAR ResNets, ResNet-18/34 | the output of stage k (after its last block's ReLU) | 3 / 4 |
| wide ResNets | the output of group k (the pre-activation sum, as the AT and CRD code read it) | 3 |
| VGG | the last ReLU of conv group k, before its max-pool | 5 |
| MobileNetV2 | the last block at each resolution (after groups 2, 3, 5 and 7) | 4 |
| DenseNet-BC | the output of dense block k (before its transition) | 3 |
| simple_cnn | conv block k's ReLU, before its max-pool | 2 |

In a `multi_branch` student the trunk's stages keep their names and each branch's layers carry the branch prefix
(`b0_stage_3`, `b1_stage_3`, ..., `b0_pool`, ...); `feature_layers` writes them with `{peer}` in place of the
branch index (`b{peer}_stage_3`), the form a part's `layers=` takes for a multi-branch student.
"""

import re

import keras

_FEATURE_NAME = re.compile(r"^(?:b(?P<branch>\d+)_)?(?P<name>stage_\d+|pool)$")


def _walk(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer)


def feature_layers(model):
    """The named feature layers of a zoo model, in network order, with their output shapes.

    Args:
        model: a model from `keras_okd.models.get` (or a builder), or a `multi_branch` student. Nested functional
            sub-models are searched too.

    Returns:
        A dict `{layer name: output shape}` (batch dimension None). For a multi-branch student the branch layers
        appear once, as `b{peer}_...` with the shapes of branch 0. Empty for a model without such names.

    Example:

    >>> from keras_okd import models
    >>> feature_layers(models.get("resnet32", num_classes=100))
    {'stage_1': (None, 32, 32, 16), 'stage_2': (None, 16, 16, 32), 'stage_3': (None, 8, 8, 64), 'pool': (None, 64)}
    >>> list(feature_layers(models.multi_branch("resnet32", num_branches=3)))
    ['stage_1', 'stage_2', 'b{peer}_stage_3', 'b{peer}_pool']
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"feature_layers needs a keras.Model, got {type(model).__name__}.")
    found = {}
    for layer in _walk(model):
        match = _FEATURE_NAME.match(layer.name)
        if match is None:
            continue
        branch = match.group("branch")
        if branch is not None and branch != "0":
            continue
        name = match.group("name") if branch is None else f"b{{peer}}_{match.group('name')}"
        found.setdefault(name, tuple(layer.output.shape))
    return found
