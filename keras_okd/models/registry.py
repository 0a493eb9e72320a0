"""Registry of the zoo: `get(name, ...)`, `names()`, `register(...)` for models of your own, and the trunk/branch
descriptions that `multi_branch` uses."""

import collections

from keras_okd.registry import Registry

from keras_okd.models import _variants
from keras_okd.models._simple_cnn import simple_cnn, simple_cnn_parts

_Entry = collections.namedtuple("_Entry", ["builder", "parts", "input_shape"])

# `simple_cnn` (any width) and every row of the variant table.
_REGISTRY = {"simple_cnn": _Entry(simple_cnn, simple_cnn_parts, _variants.DIGITS)}
_REGISTRY.update({variant.name: _Entry(_variants.BUILDERS[variant.name], _variants.parts(variant), variant.input_shape)
                  for variant in _variants.VARIANTS})

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
