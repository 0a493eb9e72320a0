"""Model zoo of keras-okd: CIFAR / TinyImageNet / ImageNet networks as functional Keras models.

Every builder returns a plain functional `keras.Model` mapping images to logits, made of
core Keras layers only (BatchNormalization momentum 0.9 / epsilon 1e-5, He-normal convs),
so a saved `.keras` file loads without keras_okd. Build by name with `get` (see
`names()`), or call a builder directly (`resnet32(num_classes=100)`).

The builders live in private modules named for their family (`_vgg.py`, `_cifar_resnet.py`, ...), so that
`keras_okd.models.vgg` means one thing: the builder.

Feature layers: every network names its stage outputs `stage_1`, `stage_2`, ... and its pooled features `pool`, so
feature-distillation parts read them by name; `feature_layers(model)` lists them with their shapes.

Multi-branch students (ONE, CL, OKDDip, PCL, DKEL): `multi_branch`, `extract_branch`, and collaborative learning's
backpropagation rescaling (`GradientScale`, `scale_trunk_gradients`); the heads that distillation puts on them live
in `keras_okd.knowledge`.

Example:

>>> from keras_okd import models
>>> models.get("wrn_16_4", num_classes=100).output_shape
(None, 100)
"""

from keras_okd.models._cifar_resnet import (
    bottleneck_resnet_2x2x2_w512,
    cifar_resnet,
    resnet20,
    resnet32,
    resnet56,
    resnet110,
    resnet110_bottleneck,
)
from keras_okd.models._imagenet_resnet import (
    imagenet_resnet,
    resnet18,
    resnet18_tiny,
    resnet34,
    resnet34_tiny,
)
from keras_okd.models._mobilenet_v2 import (
    mobilenet_v2,
    mobilenet_v2_imagenet,
    mobilenet_v2_x0_5,
)
from keras_okd.models._simple_cnn import simple_cnn, simple_cnn_8, simple_cnn_16, simple_cnn_64
from keras_okd.models._vgg import vgg, vgg13, vgg16
from keras_okd.models._wide_resnet import wide_resnet, wrn_16_2, wrn_16_4, wrn_28_2, wrn_40_2
from keras_okd.models.branches import (
    branch_name,
    extract_branch,
    multi_branch,
    num_branches_of,
    scale_trunk_gradients,
    trunk_gradient_scale,
)
from keras_okd.models.densenet import densenet_bc, densenet_bc_40_12
from keras_okd.models.features import feature_layers
from keras_okd.models.gradient_scale import GradientScale
from keras_okd.models.registry import get, names, register

__all__ = [
    "GradientScale",
    "bottleneck_resnet_2x2x2_w512",
    "branch_name",
    "cifar_resnet",
    "densenet_bc",
    "densenet_bc_40_12",
    "extract_branch",
    "feature_layers",
    "get",
    "imagenet_resnet",
    "mobilenet_v2",
    "mobilenet_v2_imagenet",
    "mobilenet_v2_x0_5",
    "multi_branch",
    "names",
    "register",
    "num_branches_of",
    "resnet110",
    "resnet110_bottleneck",
    "resnet18",
    "resnet18_tiny",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet34_tiny",
    "resnet56",
    "scale_trunk_gradients",
    "simple_cnn",
    "simple_cnn_16",
    "simple_cnn_64",
    "simple_cnn_8",
    "trunk_gradient_scale",
    "vgg",
    "vgg13",
    "vgg16",
    "wide_resnet",
    "wrn_16_2",
    "wrn_16_4",
    "wrn_28_2",
    "wrn_40_2",
]
