"""The zoo's named feature layers (`stage_k`, `pool`) and `feature_layers`.

Networks are built shapes-only (as in test_zoo_counts.py) except where values are compared.
"""

import keras
import numpy as np
import pytest

from keras_okd import models
from test_zoo_counts import shapes_only  # tests/models is on sys.path (pytest rootdir-relative import)

STAGES = {
    "simple_cnn": 2,
    "simple_cnn_8": 2,
    "simple_cnn_16": 2,
    "simple_cnn_64": 2,
    "vgg13": 5,
    "vgg16": 5,
    "mobilenet_v2_x0_5": 4,
    "mobilenet_v2_imagenet": 4,
    "resnet18": 4,
    "resnet34": 4,
    "resnet18_tiny": 4,
    "resnet34_tiny": 4,
}


def _stage_count(name):
    return STAGES.get(name, 3)


@pytest.mark.parametrize("name", models.names())
def test_every_zoo_network_names_its_stages_and_pool(name):
    with shapes_only():
        model = models.get(name, num_classes=10)
        names = list(models.feature_layers(model))
        stages = _stage_count(name)
        assert names == [f"stage_{k}" for k in range(1, stages + 1)] + ["pool"]
        for k in range(1, stages + 1):
            layer = model.get_layer(f"stage_{k}")
            assert isinstance(layer, keras.layers.Identity)  # a name only: no computation, no weights
            assert not layer.weights
        # `pool` is what the classifier reads (through its dropout where the network has one).
        read = model.get_layer("logits").input
        if any(layer.name == "dropout" for layer in model.layers):
            read = model.get_layer("dropout").input
        assert read is model.get_layer("pool").output
        # Each stage is at most as large as the previous one (network order).
        sizes = [model.get_layer(f"stage_{k}").output.shape[1] for k in range(1, stages + 1)]
        assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("name", models.names())
def test_multi_branch_names_each_branch_apart(name):
    with shapes_only():
        single = models.feature_layers(models.get(name, num_classes=10))
        student = models.multi_branch(name, num_branches=2, num_classes=10)
        found = models.feature_layers(student)
    trunk = [n[len("trunk/"):] for n in found if n.startswith("trunk/")]
    branch = [n[len("branch_{peer}/b{peer}_"):] for n in found if n.startswith("branch_{peer}/b{peer}_")]
    assert len(trunk) + len(branch) == len(found)
    assert trunk + branch == list(single)  # same layers, same order, split between trunk and branches
    assert branch[-1] == "pool" and len(branch) >= 2
    assert [found[n] for n in found] == list(single.values())
    for n in trunk:
        assert student.get_layer("trunk").get_layer(n).output.shape == single[n]
    for i in range(2):
        sub = student.get_layer(models.branch_name(i))
        for n in branch:
            assert sub.get_layer(f"b{i}_{n}").output.shape == single[n]


def test_table4_shapes():
    with shapes_only():
        assert models.feature_layers(models.get("resnet32", num_classes=100)) == {
            "stage_1": (None, 32, 32, 16),
            "stage_2": (None, 16, 16, 32),
            "stage_3": (None, 8, 8, 64),
            "pool": (None, 64),
        }
        assert models.feature_layers(models.get("wrn_16_2", num_classes=100)) == {
            "stage_1": (None, 32, 32, 32),
            "stage_2": (None, 16, 16, 64),
            "stage_3": (None, 8, 8, 128),
            "pool": (None, 128),
        }


def test_stage_values_are_the_block_outputs():
    """stage_k passes its block's output through unchanged (checked on values, resnet20 and wrn-16-1 style)."""
    model = models.get("resnet20", num_classes=10)
    probe = keras.Model(
        model.input,
        [model.get_layer("stage_2").output, model.get_layer("stage2_block3_out").output, model.output],
    )
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    stage, block, logits = (keras.ops.convert_to_numpy(t) for t in probe(x, training=False))
    np.testing.assert_array_equal(stage, block)
    np.testing.assert_array_equal(logits, keras.ops.convert_to_numpy(model(x, training=False)))


def test_feature_layers_of_a_plain_model_and_bad_input():
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(2, name="stage_x")(inputs))
    assert models.feature_layers(plain) == {}
    with pytest.raises(TypeError, match="keras.Model"):
        models.feature_layers(keras.layers.Dense(2))
