"""Model zoo of keras-okd: CIFAR / TinyImageNet / ImageNet networks as functional Keras models.

Every builder returns a plain functional `keras.Model` mapping images to logits, made of
core Keras layers only (BatchNormalization momentum 0.9 / epsilon 1e-5, He-normal convs),
so a saved `.keras` file loads without keras_okd. Build by name with `get` (see
`names()`), or call a builder directly (`resnet32(num_classes=100)`).

The builders live in private modules named for their family (`_vgg.py`, `_cifar_resnet.py`, `_densenet.py`, ...), so
that `keras_okd.models.vgg` means one thing: the builder. The named networks (`resnet32`, `wrn_16_4`, ...) are the rows
of one table, `_variants.py`, which makes their builders and registers them for `get`.

Feature layers: every network names its stage outputs `stage_1`, `stage_2`, ... and its pooled features `pool`, so
feature-distillation parts read them by name; `feature_layers(model)` lists them with their shapes.

Multi-branch students (ONE, CL, OKDDip, PCL, DKEL): `multi_branch`, `extract_branch`, and collaborative learning's
backpropagation rescaling (`GradientScale`, `scale_trunk_gradients`); the heads that distillation puts on them live
in `keras_okd.knowledge`. L-MCL's auxiliary branches (a fresh copy of the rest of a network on an inner layer):
`auxiliary_branch`.

Example:

>>> from keras_okd import models
>>> models.get("wrn_16_4", num_classes=100).output_shape
(None, 100)
"""

from keras_okd.models._cifar_resnet import cifar_resnet
from keras_okd.models.auxiliary import auxiliary_branch
from keras_okd.models._imagenet_resnet import imagenet_resnet
from keras_okd.models._mobilenet_v2 import mobilenet_v2
from keras_okd.models._simple_cnn import simple_cnn
from keras_okd.models._variants import BUILDERS as _BUILDERS
from keras_okd.models._vgg import vgg
from keras_okd.models._wide_resnet import wide_resnet
from keras_okd.models.branches import (
    branch_name,
    extract_branch,
    multi_branch,
    num_branches_of,
    scale_trunk_gradients,
    trunk_gradient_scale,
)
from keras_okd.models._densenet import densenet_bc
from keras_okd.models.features import feature_layers
from keras_okd.models.gradient_scale import GradientScale
from keras_okd.models.registry import get, names, register

# The named networks (`resnet32`, `wrn_16_4`, `simple_cnn_8`, ...): one builder per row of `_variants.VARIANTS`.
globals().update(_BUILDERS)

__all__ = sorted([
    "GradientScale",
    "auxiliary_branch",
    "branch_name",
    "cifar_resnet",
    "densenet_bc",
    "extract_branch",
    "feature_layers",
    "get",
    "imagenet_resnet",
    "mobilenet_v2",
    "multi_branch",
    "names",
    "register",
    "num_branches_of",
    "scale_trunk_gradients",
    "simple_cnn",
    "trunk_gradient_scale",
    "vgg",
    "wide_resnet",
    *_BUILDERS,
])
