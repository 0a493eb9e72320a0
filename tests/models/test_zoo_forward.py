"""Forward passes (batch of 2), registry behaviour and BatchNorm settings of the zoo.

Forward passes use one cheap member per family (the rest are counted symbolically in
test_zoo_counts.py): under JAX on CPU every new weight shape costs one XLA compilation
of the random initializer, so big networks are only built for counting.
"""

import keras
import numpy as np
import pytest

import keras_okd
from keras_okd import models


def _build(build):
    """Builds a model; under JAX fills its weights from numpy instead of its initializers.

    JAX on CPU compiles each random initializer once per weight shape (0.3-1.5 s each on
    this 2-core machine; MobileNetV2 alone has ~40 shapes). Forward passes only need some
    finite weights, so under JAX the variables are created uninitialised (shapes only)
    and assigned He-scaled normal draws. Initialisation itself is exercised by the
    other test modules (resnet20, simple_cnn) on every backend.
    """
    if keras.backend.backend() != "jax":
        return build()
    from keras.src.backend.common import global_state

    before = list(global_state.get_global_attribute("uninitialized_variables", None) or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = build()
    finally:
        global_state.set_global_attribute("uninitialized_variables", before)
    rng = np.random.default_rng(0)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if len(shape) >= 2:
            value = rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
        else:
            value = rng.uniform(0.5, 1.5, size=shape)
        variable.assign(value.astype(variable.dtype))
    return model


def _forward(model, batch=2):
    x = np.random.default_rng(0).uniform(size=(batch, *model.input_shape[1:])).astype("float32")
    if keras.backend.backend() == "jax":
        # One XLA compilation of the whole graph instead of one per eager op.
        return model.predict(x, batch_size=batch, verbose=0)
    return keras.ops.convert_to_numpy(model(x, training=False))


_CIFAR = (32, 32, 3)
FORWARD_CASES = [
    # (id, builder, expected input shape)
    ("simple_cnn", lambda: models.get("simple_cnn", num_classes=7), (8, 8, 1)),
    ("resnet20", lambda: models.get("resnet20", num_classes=7), _CIFAR),
    ("bottleneck_resnet", lambda: models.cifar_resnet((1, 1, 1), "bottleneck", 128, num_classes=7), _CIFAR),
    ("wrn_16_2", lambda: models.get("wrn_16_2", num_classes=7), _CIFAR),
    ("vgg11", lambda: models.vgg(11, num_classes=7), _CIFAR),
    ("mobilenet_v2_cifar", lambda: models.mobilenet_v2(0.25, num_classes=7, variant="cifar"), _CIFAR),
    ("densenet_bc_10_6", lambda: models.densenet_bc(10, 6, num_classes=7), _CIFAR),
    ("resnet18_tiny", lambda: models.get("resnet18_tiny", num_classes=7, input_shape=_CIFAR), _CIFAR),
    (
        "resnet18_imagenet_stem",
        lambda: models.get("resnet18", num_classes=7, input_shape=(64, 64, 3)),
        (64, 64, 3),
    ),
]


@pytest.mark.parametrize("case", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_forward_batch_of_two(case):
    _, build, input_shape = case
    model = _build(build)
    assert model.input_shape == (None, *input_shape)
    assert model.output_shape == (None, 7)
    logits = _forward(model)
    assert logits.shape == (2, 7)
    assert np.all(np.isfinite(logits))


def test_names_and_builders_exposed():
    names = models.names()
    expected = {
        "simple_cnn", "simple_cnn_8", "simple_cnn_16", "simple_cnn_64", "resnet20", "resnet32", "resnet56", "resnet110", "resnet110_bottleneck",
        "wrn_16_2", "wrn_16_4", "wrn_28_2", "wrn_40_2", "bottleneck_resnet_2x2x2_w512",
        "vgg13", "vgg16", "mobilenet_v2_x0_5", "mobilenet_v2_imagenet", "densenet_bc_40_12",
        "resnet18", "resnet34", "resnet18_tiny", "resnet34_tiny",
    }
    assert set(names) == expected
    assert names == sorted(names)
    for name in names:
        assert callable(getattr(models, name)), name


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as info:
        models.get("resnet33")
    message = str(info.value)
    assert "resnet33" in message
    for name in models.names():
        assert name in message
    with pytest.raises(ValueError, match="bottleneck_resnet_2x2x2_w512"):
        models.multi_branch("WRN-20-8")


def test_default_input_shapes_and_name_normalisation():
    from keras_okd.models.registry import lookup

    assert lookup("resnet32").input_shape == (32, 32, 3)
    assert lookup("WRN-16-4").input_shape == (32, 32, 3)
    assert lookup("resnet18_tiny").input_shape == (64, 64, 3)
    assert lookup("resnet34").input_shape == (224, 224, 3)
    assert lookup("mobilenet_v2_imagenet").input_shape == (224, 224, 3)
    assert lookup("simple_cnn").input_shape == (8, 8, 1)
    model = models.get("simple_cnn", num_classes=3, width=4)
    assert model.input_shape == (None, 8, 8, 1)


def test_batchnorm_settings_and_conv_init():
    model = models.get("resnet20")
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert bns and convs
    for bn in bns:
        assert bn.momentum == pytest.approx(0.9)
        assert bn.epsilon == pytest.approx(1e-5)
        assert not bn.synchronized
    for conv in convs:
        assert not conv.use_bias
        assert isinstance(conv.kernel_initializer, keras.initializers.HeNormal)


def test_synchronized_bn_option():
    if keras.backend.backend() == "tensorflow":
        model = models.get("simple_cnn", synchronized_bn=True)
        bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
        assert bns and all(bn.synchronized for bn in bns)
        gate = keras_okd.knowledge.GateHead(3, synchronized_bn=True)
        assert gate.bn.synchronized
    else:
        # Keras only implements synchronized BN on TensorFlow; elsewhere it is a no-op.
        with pytest.warns(UserWarning, match="synchronized_bn"):
            from keras_okd.models import _common

            _common._warned_sync.clear()
            model = models.get("simple_cnn", synchronized_bn=True)
        bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
        assert bns and not any(bn.synchronized for bn in bns)
