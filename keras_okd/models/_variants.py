"""The zoo's named networks, one row each: what feeds both the named builders (`resnet32`, ...) and `get(name)`.

A row names a family's parts function (`cifar_resnet_parts`, ...) and the arguments that fix the network, its
default input shape, the options its builder still takes (with their defaults) and the sentences of its docstring.
`builder(variant)` makes the named builder, `keras.Model` images -> logits, with the signature
`(num_classes=10, input_shape=<its shape>, synchronized_bn=False, <options>, name=<its name>)` and a docstring with
the shared Args, Returns and Example; `registry.py` registers every row with the same parts function.
"""

import collections
import functools
import inspect

from keras_okd.models._cifar_resnet import cifar_resnet_parts
from keras_okd.models._imagenet_resnet import imagenet_resnet_parts
from keras_okd.models._mobilenet_v2 import mobilenet_v2_parts
from keras_okd.models._simple_cnn import simple_cnn_parts
from keras_okd.models._vgg import vgg_parts
from keras_okd.models._wide_resnet import wide_resnet_parts
from keras_okd.models._densenet import densenet_bc_parts

CIFAR = (32, 32, 3)
TINY = (64, 64, 3)
IMAGENET = (224, 224, 3)
DIGITS = (8, 8, 1)

Variant = collections.namedtuple("Variant", ["name", "family", "fixed", "input_shape", "doc", "options"],
                                 defaults=[{}])
Variant.__doc__ = """One named network of the zoo.

Fields:
    name: the zoo name (`get(name)`), the builder's name and the model's default name.
    family: the family's parts function, `family(**fixed, num_classes=..., synchronized_bn=..., name=...)`.
    fixed: the family arguments that make this network.
    input_shape: the default `(height, width, channels)`.
    doc: the docstring's first lines (what the network is, its parameter count).
    options: `{argument: (default, "what it does")}` the builder still takes (e.g. `dropout_rate`).
"""

_WRN_DROPOUT = {"dropout_rate": (0.0, "dropout between the two convs of each block (default 0).")}

VARIANTS = (
    Variant("resnet20", cifar_resnet_parts, {"blocks_per_stage": (3, 3, 3)}, CIFAR,
            "ResNet-20 for CIFAR (3 basic blocks per stage; 272,474 params at 10 classes)."),
    Variant("resnet32", cifar_resnet_parts, {"blocks_per_stage": (5, 5, 5)}, CIFAR,
            "ResNet-32 for CIFAR (5 basic blocks per stage; 466,906 params at 10 classes)."),
    Variant("resnet56", cifar_resnet_parts, {"blocks_per_stage": (9, 9, 9)}, CIFAR,
            "ResNet-56 for CIFAR (9 basic blocks per stage; 855,770 params at 10 classes)."),
    Variant("resnet110", cifar_resnet_parts, {"blocks_per_stage": (18, 18, 18)}, CIFAR,
            "ResNet-110 for CIFAR with basic blocks (18 per stage; 1,730,714 params at 10 classes).\n\n"
            "This is He et al.'s ResNet-110. The \"ResNet-110\" of ONE/OKDDip/PCL/DKEL is a different network: see "
            "`resnet110_bottleneck`."),
    Variant("resnet110_bottleneck", cifar_resnet_parts, {"blocks_per_stage": (12, 12, 12), "block": "bottleneck"},
            CIFAR,
            "The \"ResNet-110\" of ONE / OKDDip / PCL / DKEL: bottleneck blocks [12, 12, 12].\n\n"
            "12 bottleneck blocks per stage (3 convs each): 3 * 12 * 3 + 2 = 110 layers. Stage outputs have 64, 128 "
            "and 256 channels; 1,147,738 params at 10 classes."),
    Variant("bottleneck_resnet_2x2x2_w512", cifar_resnet_parts,
            {"blocks_per_stage": (2, 2, 2), "block": "bottleneck", "base_width": 512}, CIFAR,
            "The network PCL and DKEL call \"WRN-20-8\": bottleneck blocks [2, 2, 2], width 512.\n\n"
            "Two bottleneck blocks per stage whose 3x3 convolutions are 8x wider than a plain bottleneck (inner "
            "widths 128, 256, 512, the \"width 512\" of torchvision's `width_per_group` convention); outputs 64, 128, "
            "256 channels; 6,848,090 params at 10 classes. It is *not* a Zagoruyko wide ResNet: a WRN has depth "
            "6n + 4 and pre-activation basic blocks, so \"WRN-20-8\" does not exist in that family. The name here "
            "says what the network is."),
    Variant("wrn_16_2", wide_resnet_parts, {"depth": 16, "width": 2}, CIFAR,
            "WRN-16-2 (691,674 params at 10 classes).", _WRN_DROPOUT),
    Variant("wrn_16_4", wide_resnet_parts, {"depth": 16, "width": 4}, CIFAR,
            "WRN-16-4 (2,748,890 params at 10 classes).", _WRN_DROPOUT),
    Variant("wrn_28_2", wide_resnet_parts, {"depth": 28, "width": 2}, CIFAR,
            "WRN-28-2 (1,467,610 params at 10 classes).", _WRN_DROPOUT),
    Variant("wrn_40_2", wide_resnet_parts, {"depth": 40, "width": 2}, CIFAR,
            "WRN-40-2 (2,243,546 params at 10 classes; not in the reference table).", _WRN_DROPOUT),
    Variant("vgg13", vgg_parts, {"depth": 13}, CIFAR, "VGG-13 with BN, conv bias and one FC (9,416,010 params at 10 "
            "classes)."),
    Variant("vgg16", vgg_parts, {"depth": 16}, CIFAR, "VGG-16 with BN, conv bias and one FC (14,728,266 params at 10 "
            "classes)."),
    Variant("mobilenet_v2_x0_5", mobilenet_v2_parts,
            {"width_multiplier": 0.5, "variant": "cifar", "dropout_rate": 0.0}, CIFAR,
            "The CIFAR MobileNetV2 x0.5 of the TSB/CRD benchmarks (697,546 params at 10 classes).\n\n"
            "Expansion 6, last layer 1280, stride-2 stem; see `mobilenet_v2`."),
    Variant("densenet_bc_40_12", densenet_bc_parts,
            {"depth": 40, "growth_rate": 12, "compression": 0.5, "initial_features": 24}, CIFAR,
            "DenseNet-BC-40-12, 24 initial features, compression 0.5 (176,122 params at 10 classes).\n\n"
            "The \"DenseNet-40-12\" of PCL and DKEL."),
    Variant("resnet18_tiny", imagenet_resnet_parts, {"depth": 18, "stem": "tiny"}, TINY,
            "ResNet-18 for 64x64 TinyImageNet images (3x3 stride-1 stem, no max-pool)."),
    Variant("resnet34_tiny", imagenet_resnet_parts, {"depth": 34, "stem": "tiny"}, TINY,
            "ResNet-34 for 64x64 TinyImageNet images (3x3 stride-1 stem, no max-pool)."),
    Variant("resnet18", imagenet_resnet_parts, {"depth": 18, "stem": "imagenet"}, IMAGENET,
            "ResNet-18 for 224x224 ImageNet images (11,689,512 params at 1000 classes)."),
    Variant("resnet34", imagenet_resnet_parts, {"depth": 34, "stem": "imagenet"}, IMAGENET,
            "ResNet-34 for 224x224 ImageNet images (21,797,672 params at 1000 classes)."),
    Variant("mobilenet_v2_imagenet", mobilenet_v2_parts, {"width_multiplier": 1.0, "variant": "imagenet"}, IMAGENET,
            "MobileNetV2 width 1.0 for ImageNet, as torchvision (3,504,872 params at 1000 classes).",
            {"dropout_rate": (0.2, "dropout before the classifier.")}),
    *(Variant(f"simple_cnn_{width}", simple_cnn_parts, {"width": width}, DIGITS,
              f"`simple_cnn` of width {width} (conv blocks of {width} and {2 * width} filters; `simple_cnn` itself is "
              "width 32): the student-capacity axis of the regime studies, by zoo name "
              f"(`students: [simple_cnn_{width}, simple_cnn_{width}]`).")
      for width in (8, 16, 64)),
)

_ARGS = """
Args:
    num_classes: number of output logits.
    input_shape: `(height, width, channels)` of one image.
    synchronized_bn: use synchronized BatchNormalization (TensorFlow only).
{options}    name: model name.

Returns:
    A functional `keras.Model` mapping images to logits.

Example:

>>> {name}(num_classes=100).output_shape
(None, 100)
"""


def parts(variant):
    """The variant's trunk/branch factory, `fn(num_classes=..., synchronized_bn=..., **options) -> ModelParts`."""
    return functools.partial(variant.family, **variant.fixed, name=variant.name)


def builder(variant):
    """The named builder of `variant`: a function images -> logits model, with its own signature and docstring.

    Example:

    >>> resnet20 = builder(VARIANTS[0])
    >>> inspect.signature(resnet20)
    <Signature (num_classes=10, input_shape=(32, 32, 3), synchronized_bn=False, name='resnet20')>
    """
    arguments = [("num_classes", 10), ("input_shape", variant.input_shape), ("synchronized_bn", False),
                 *((option, default) for option, (default, _) in variant.options.items()), ("name", variant.name)]
    signature = inspect.Signature([inspect.Parameter(argument, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     default=default) for argument, default in arguments])
    make_parts = parts(variant)

    def build(*args, **kwargs):
        values = signature.bind(*args, **kwargs)
        values.apply_defaults()
        values = dict(values.arguments)
        input_shape = values.pop("input_shape")
        return make_parts(**values).build(input_shape, values["name"])

    options = "".join(f"    {option}: {text}\n" for option, (_, text) in variant.options.items())
    build.__signature__ = signature
    build.__name__ = build.__qualname__ = variant.name
    build.__module__ = "keras_okd.models"
    build.__doc__ = variant.doc + "\n" + _ARGS.format(options=options, name=variant.name)
    return build


BUILDERS = {variant.name: builder(variant) for variant in VARIANTS}
