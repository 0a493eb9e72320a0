"""Auxiliary branches: a fresh copy of the rest of a network, grown on one of its inner layers.

L-MCL (Yang et al., TPAMI 2023, `models/lmcl_resnet_cifar.py` of github.com/winycg/L-MCL) puts on the output of each
early stage of a network a branch made of new copies of the network's later stages, its pooling and a classifier of
its own, so that every stage gives pooled features of the final width and logits. `auxiliary_branch(model, layer)`
builds that branch for any functional network: it clones the network (new layers, new weights) and keeps the layers
from `layer`'s output to the pooled features and the logits.

Example:

>>> from keras_okd import models
>>> net = models.get("resnet32", num_classes=100)
>>> branch = auxiliary_branch(net, "stage_1")                     # stages 2 and 3, pooling, classifier, new weights
>>> branch.input_shape, [tuple(s) for s in branch.output_shape]
((None, 32, 32, 16), [(None, 64), (None, 100)])
"""

import keras


def auxiliary_branch(model, layer, features="pool", name=None):
    """A new network from `layer`'s output of `model` to `[pooled features, logits]`: copies of `model`'s layers
    after `layer` with freshly initialised weights (`keras.models.clone_model`), named `"{name}_{layer name}"`.

    Args:
        model: a functional (or Sequential) `keras.Model` mapping images to logits.
        layer: the name of the inner layer the branch grows on (the zoo's `stage_1`, `stage_2`, ...).
        features: the name of the layer whose output is the branch's pooled features, the classifier's input (the
            zoo's `pool`).
        name: the branch's name and the prefix of its layers; default `"aux_{layer}"`.

    Returns:
        A functional `keras.Model`: input `layer`'s output shape, outputs `[features (B, F), logits (B, C)]`. It
        shares nothing with `model`; its parameters are those of `model`'s layers after `layer`.

    Raises:
        ValueError: `model` has no layer `layer` or `features`, is not a graph of layers (a subclassed model), or its
            output needs more than `layer`'s output (a connection that skips over `layer`).

    Example:

    >>> import numpy as np
    >>> from keras_okd import models
    >>> net = models.get("simple_cnn_8", input_shape=(28, 28, 1))
    >>> branch = auxiliary_branch(net, "stage_1")                  # max-pool, the second conv block, classifier
    >>> [tuple(t.shape) for t in branch(np.zeros((2, 28, 28, 8), "float32"))]
    [(2, 784), (2, 10)]
    >>> branch.count_params() == net.count_params() - 8 * 9 - 2 * 8 - 2 * 8    # the first conv block's stay out
    True
    """
    name = name or f"aux_{layer}"
    names = [each.name for each in getattr(model, "layers", [])]
    missing = [n for n in (layer, features) if n not in names]
    if missing:
        raise ValueError(f"auxiliary_branch: model {model.name!r} has no layer {missing[0]!r}; its layers include "
                         f"{names[-12:]}. Name an inner layer (the zoo's stage_1, stage_2, ...) and the pooled "
                         "features before the classifier (the zoo's 'pool').")

    def renamed(each):
        return each.__class__.from_config({**each.get_config(), "name": f"{name}_{each.name}"})

    try:
        copy = keras.models.clone_model(model, clone_function=renamed)
    except ValueError as error:
        raise ValueError(f"auxiliary_branch: model {model.name!r} could not be copied layer by layer ({error}); "
                         "it needs to be a functional or Sequential model.") from None
    start = copy.get_layer(f"{name}_{layer}").output
    try:
        return keras.Model(start, [copy.get_layer(f"{name}_{features}").output, copy.output], name=name)
    except ValueError as error:
        raise ValueError(f"auxiliary_branch: the layers of {model.name!r} after {layer!r} need more than its output "
                         f"(a connection skips over it: {error}); grow the branch on a layer that every later "
                         "layer depends on alone, such as the output of a stage.") from None
