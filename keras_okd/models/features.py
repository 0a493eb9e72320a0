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

In a `multi_branch` student the layers live in the nested sub-models `trunk` and `branch_0`, `branch_1`, ..., whose
layers carry the branch prefix (`b0_stage_3`, `b0_pool`, ...); a part names them by path, `"trunk/stage_1"` and, with
`{peer}` in place of the branch index, `"branch_{peer}/b{peer}_stage_3"`: `feature_layers` lists them in that form.
"""

import re

import keras

_FEATURE_NAME = re.compile(r"^(?:b(?P<branch>\d+)_)?(?P<name>stage_\d+|pool)$")
_BRANCH_MODEL = re.compile(r"^branch_(?P<branch>\d+)$")


def _walk(model, path=()):
    """`(path of sub-model names, layer)` for every layer, nested functional sub-models included."""
    for layer in model.layers:
        yield path, layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer, path + (layer.name,))


def feature_layers(model):
    """The named feature layers of a zoo model, in network order, with their output shapes.

    Args:
        model: a model from `keras_okd.models.get` (or a builder), or a `multi_branch` student. Nested functional
            sub-models are searched too.

    Returns:
        A dict `{name: output shape}` (batch dimension None), the names as a part's `layers=` takes them: plain for a
        single network, paths into the sub-models for a multi-branch student, whose branch layers appear once, with
        `{peer}` for the branch index and the shapes of branch 0. Empty for a model without such names.

    Example:

    >>> from keras_okd import models
    >>> feature_layers(models.get("resnet32", num_classes=100))
    {'stage_1': (None, 32, 32, 16), 'stage_2': (None, 16, 16, 32), 'stage_3': (None, 8, 8, 64), 'pool': (None, 64)}
    >>> list(feature_layers(models.multi_branch("resnet32", num_branches=3)))
    ['trunk/stage_1', 'trunk/stage_2', 'branch_{peer}/b{peer}_stage_3', 'branch_{peer}/b{peer}_pool']
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"feature_layers needs a keras.Model, got {type(model).__name__}.")
    found = {}
    for path, layer in _walk(model):
        match = _FEATURE_NAME.match(layer.name)
        if match is None:
            continue
        branches = [match.group("branch")] + [m.group("branch") for m in map(_BRANCH_MODEL.match, path) if m]
        if any(b is not None and b != "0" for b in branches):
            continue  # branch 0 stands for every branch
        leaf = layer.name if match.group("branch") is None else f"b{{peer}}_{match.group('name')}"
        parents = ["branch_{peer}" if _BRANCH_MODEL.match(p) else p for p in path]
        found.setdefault("/".join(parents + [leaf]), tuple(layer.output.shape))
    return found
