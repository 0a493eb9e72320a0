"""Registry of the zoo: `get(name, ...)`, `names()`, `register(...)` for models of your own, and the trunk/branch
descriptions that `multi_branch` uses."""

import collections
import functools

from keras_okd.registry import Registry

from keras_okd.models._cifar_resnet import (
    bottleneck_resnet_2x2x2_w512,
    cifar_resnet_parts,
    resnet20,
    resnet32,
    resnet56,
    resnet110,
    resnet110_bottleneck,
)
from keras_okd.models._imagenet_resnet import (
    imagenet_resnet_parts,
    resnet18,
    resnet18_tiny,
    resnet34,
    resnet34_tiny,
)
from keras_okd.models._mobilenet_v2 import (
    mobilenet_v2_imagenet,
    mobilenet_v2_parts,
    mobilenet_v2_x0_5,
)
from keras_okd.models import _simple_cnn
from keras_okd.models._simple_cnn import simple_cnn, simple_cnn_parts
from keras_okd.models._vgg import vgg13, vgg16, vgg_parts
from keras_okd.models._wide_resnet import wide_resnet_parts, wrn_16_2, wrn_16_4, wrn_28_2, wrn_40_2
from keras_okd.models.densenet import densenet_bc_40_12, densenet_bc_parts

_Entry = collections.namedtuple("_Entry", ["builder", "parts", "input_shape"])

_CIFAR = (32, 32, 3)
_TINY = (64, 64, 3)
_IMAGENET = (224, 224, 3)


def _cifar_resnet(name, blocks, block="basic", base_width=64):
    return functools.partial(cifar_resnet_parts, blocks, block, base_width, name=name)


_REGISTRY = {
    "simple_cnn": _Entry(simple_cnn, simple_cnn_parts, (8, 8, 1)),
    "resnet20": _Entry(resnet20, _cifar_resnet("resnet20", (3, 3, 3)), _CIFAR),
    "resnet32": _Entry(resnet32, _cifar_resnet("resnet32", (5, 5, 5)), _CIFAR),
    "resnet56": _Entry(resnet56, _cifar_resnet("resnet56", (9, 9, 9)), _CIFAR),
    "resnet110": _Entry(resnet110, _cifar_resnet("resnet110", (18, 18, 18)), _CIFAR),
    "resnet110_bottleneck": _Entry(
        resnet110_bottleneck,
        _cifar_resnet("resnet110_bottleneck", (12, 12, 12), "bottleneck"),
        _CIFAR,
    ),
    "bottleneck_resnet_2x2x2_w512": _Entry(
        bottleneck_resnet_2x2x2_w512,
        _cifar_resnet("bottleneck_resnet_2x2x2_w512", (2, 2, 2), "bottleneck", 512),
        _CIFAR,
    ),
    "wrn_16_2": _Entry(
        wrn_16_2,
        functools.partial(wide_resnet_parts, 16, 2, name="wrn_16_2"),
        _CIFAR,
    ),
    "wrn_16_4": _Entry(
        wrn_16_4,
        functools.partial(wide_resnet_parts, 16, 4, name="wrn_16_4"),
        _CIFAR,
    ),
    "wrn_28_2": _Entry(
        wrn_28_2,
        functools.partial(wide_resnet_parts, 28, 2, name="wrn_28_2"),
        _CIFAR,
    ),
    "wrn_40_2": _Entry(
        wrn_40_2,
        functools.partial(wide_resnet_parts, 40, 2, name="wrn_40_2"),
        _CIFAR,
    ),
    "vgg13": _Entry(vgg13, functools.partial(vgg_parts, 13, name="vgg13"), _CIFAR),
    "vgg16": _Entry(vgg16, functools.partial(vgg_parts, 16, name="vgg16"), _CIFAR),
    "mobilenet_v2_x0_5": _Entry(
        mobilenet_v2_x0_5,
        functools.partial(
            mobilenet_v2_parts, 0.5, variant="cifar", dropout_rate=0.0,
            name="mobilenet_v2_x0_5",
        ),
        _CIFAR,
    ),
    "densenet_bc_40_12": _Entry(
        densenet_bc_40_12,
        functools.partial(densenet_bc_parts, 40, 12, 0.5, 24, name="densenet_bc_40_12"),
        _CIFAR,
    ),
    "resnet18_tiny": _Entry(
        resnet18_tiny,
        functools.partial(imagenet_resnet_parts, 18, "tiny", name="resnet18_tiny"),
        _TINY,
    ),
    "resnet34_tiny": _Entry(
        resnet34_tiny,
        functools.partial(imagenet_resnet_parts, 34, "tiny", name="resnet34_tiny"),
        _TINY,
    ),
    "resnet18": _Entry(
        resnet18,
        functools.partial(imagenet_resnet_parts, 18, "imagenet", name="resnet18"),
        _IMAGENET,
    ),
    "resnet34": _Entry(
        resnet34,
        functools.partial(imagenet_resnet_parts, 34, "imagenet", name="resnet34"),
        _IMAGENET,
    ),
    "mobilenet_v2_imagenet": _Entry(
        mobilenet_v2_imagenet,
        functools.partial(
            mobilenet_v2_parts, 1.0, variant="imagenet", name="mobilenet_v2_imagenet"
        ),
        _IMAGENET,
    ),
}

_REGISTRY.update({  # simple_cnn of other widths, by name (a config's students are zoo names)
    f"simple_cnn_{w}": _Entry(getattr(_simple_cnn, f"simple_cnn_{w}"), functools.partial(simple_cnn_parts, width=w),
                              (8, 8, 1))
    for w in _simple_cnn.WIDTHS
})

_ZOO = Registry("model", _REGISTRY)

# Names the papers use that are not (or not exactly) zoo names.
_HINTS = {
    "wrn_20_8": "PCL/DKEL's 'WRN-20-8' is 'bottleneck_resnet_2x2x2_w512'",
    "mobilenet_v2": "use 'mobilenet_v2_x0_5' (CIFAR) or 'mobilenet_v2_imagenet'",
    "mobilenetv2": "use 'mobilenet_v2_x0_5' (CIFAR) or 'mobilenet_v2_imagenet'",
    "densenet40": "use 'densenet_bc_40_12'",
}


def _normalize(name):
    return str(name).strip().lower().replace("-", "_")


def names():
    """The names `get` and `multi_branch` accept, sorted.

    Returns:
        A list of strings.

    Example:

    >>> "resnet32" in names()
    True
    """
    return _ZOO.names()


def register(name, builder=None, input_shape=None, parts=None, overwrite=False):
    """Register a model builder under `name`, so that `get(name)`, configs (`students: [name, ...]`) and the CLI can
    build it. Usable as a decorator.

    Args:
        name: the model's name (lower case, `_` for separators; `get` normalises names the same way).
        builder: a function `builder(num_classes=..., input_shape=..., synchronized_bn=..., **kwargs)` returning a
            `keras.Model` that maps inputs to logits (any Keras model: `keras.applications` ones included).
        input_shape: its default input shape.
        parts: optional trunk/branch description (the zoo's private `ModelParts`) for `multi_branch`; without it the
            model can be a student but not a multi-branch student.
        overwrite: replace an existing registration.

    Example:

    ```python
    @keras_okd.models.register("mobilenet_v3_small", input_shape=(32, 32, 3))
    def mobilenet_v3_small(num_classes=10, input_shape=(32, 32, 3), synchronized_bn=False, **kwargs):
        return keras.applications.MobileNetV3Small(input_shape=input_shape, weights=None, classes=num_classes,
                                                   classifier_activation=None, include_preprocessing=False)
    ```
    """

    def add(function):
        _ZOO.register(_normalize(name), _Entry(function, parts, tuple(input_shape) if input_shape else None),
                      overwrite=overwrite)
        return function

    return add if builder is None else add(builder)


def lookup(name):
    """Returns the registry entry of `name` (builder, parts factory, default input shape).

    Names are case-insensitive and `-` may stand for `_` (`"WRN-16-4"` works).

    Args:
        name: a model name.

    Returns:
        The entry, a named tuple `(builder, parts, input_shape)`.

    Raises:
        ValueError: `name` is unknown; the message lists the known names.

    Example:

    >>> lookup("resnet32").input_shape
    (32, 32, 3)
    """
    key = _normalize(name)
    if key in _HINTS and key not in _ZOO:
        raise ValueError(f"Unknown model name {name!r} ({_HINTS[key]}). Known names: {', '.join(names())}.")
    return _ZOO.get(key)


def get(name, num_classes=10, input_shape=None, synchronized_bn=False, **kwargs):
    """Builds a zoo network by name: a functional `keras.Model` images -> logits.

    Args:
        name: one of `names()` (case-insensitive, `-` may stand for `_`).
        num_classes: number of output logits.
        input_shape: `(height, width, channels)`; defaults per family: (32, 32, 3) for
            CIFAR networks, (64, 64, 3) for the `*_tiny` ResNets, (224, 224, 3) for the
            ImageNet networks, (8, 8, 1) for `simple_cnn`.
        synchronized_bn: use `BatchNormalization(synchronized=True)` (TensorFlow only;
            needed when several replicas train one model).
        **kwargs: passed to the family builder (e.g. `name`, `width` for `simple_cnn`,
            `dropout_rate` for `mobilenet_v2_imagenet`).

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: unknown `name`; the message lists the known names.

    Example:

    >>> model = get("resnet32", num_classes=100)
    >>> model.output_shape
    (None, 100)
    """
    entry = lookup(name)
    shape = tuple(input_shape) if input_shape is not None else entry.input_shape
    if shape is None:
        raise ValueError(f"Model {name!r} has no default input shape; pass input_shape=(height, width, channels).")
    return entry.builder(
        num_classes=num_classes, input_shape=shape, synchronized_bn=synchronized_bn, **kwargs
    )


def get_parts(name, num_classes=10, synchronized_bn=False, **kwargs):
    """The trunk/branch description of a zoo network (used by `multi_branch`).

    Args:
        name: one of `names()`.
        num_classes: number of output logits.
        synchronized_bn: use synchronized BatchNormalization (TensorFlow only).
        **kwargs: passed to the family's parts function.

    Returns:
        A `ModelParts` (private type): `trunk`, `branch`, `classifier`, `build`.

    Example:

    >>> parts = get_parts("resnet20")
    >>> parts.build().output_shape
    (None, 10)
    """
    entry = lookup(name)
    if entry.parts is None:
        raise ValueError(f"Model {name!r} has no trunk/branch description, so it cannot be a multi-branch student; "
                         "register it with parts=... or use independent students.")
    return entry.parts(num_classes=num_classes, synchronized_bn=synchronized_bn, **kwargs)
