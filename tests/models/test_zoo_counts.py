"""Trainable-parameter counts of every zoo network against REFERENCE.md and torchvision.

Networks are built inside a `keras.StatelessScope(initialize_variables=False)`: layers
get their variables' shapes but no initial values, which is all a count needs and keeps
the JAX backend from compiling one random initializer per weight shape.
"""

import contextlib

import keras
import numpy as np
import pytest

import keras_okd
from keras_okd import models


@contextlib.contextmanager
def shapes_only():
    """Build models without initialising their variables (count-only)."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - private module moved: build normally
        yield
        return
    before = list(global_state.get_global_attribute("uninitialized_variables", None) or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        # Forget the never-initialised variables so no later scope initialises them.
        global_state.set_global_attribute("uninitialized_variables", before)


def trainable_count(model_or_layer):
    return int(sum(np.prod(w.shape) for w in model_or_layer.trainable_weights))


# REFERENCE.md, "Reference trainable-parameter counts": (name, CIFAR-10, CIFAR-100).
REFERENCE_COUNTS = [
    ("resnet20", 272_474, 278_324),
    ("resnet32", 466_906, 472_756),
    ("resnet56", 855_770, 861_620),
    ("resnet110", 1_730_714, 1_736_564),
    ("resnet110_bottleneck", 1_147_738, 1_170_868),
    ("wrn_16_2", 691_674, 703_284),
    ("wrn_16_4", 2_748_890, 2_772_020),
    ("wrn_28_2", 1_467_610, 1_479_220),
    ("bottleneck_resnet_2x2x2_w512", 6_848_090, 6_871_220),
    ("vgg13", 9_416_010, 9_462_180),
    ("vgg16", 14_728_266, 14_774_436),
    ("mobilenet_v2_x0_5", 697_546, 812_836),
    ("densenet_bc_40_12", 176_122, 188_092),
    # Not in REFERENCE.md: WRN-40-2 as published by the CRD benchmark (2.24M / 2.26M).
    ("wrn_40_2", 2_243_546, 2_255_156),
]

# torchvision's counts at 1000 classes.
TORCHVISION_COUNTS = [
    ("resnet18", 11_689_512),
    ("resnet34", 21_797_672),
    ("mobilenet_v2_imagenet", 3_504_872),
]


@pytest.mark.parametrize("name,count10,count100", REFERENCE_COUNTS)
def test_reference_counts(name, count10, count100):
    with shapes_only():
        assert trainable_count(models.get(name, num_classes=10)) == count10
        assert trainable_count(models.get(name, num_classes=100)) == count100


@pytest.mark.parametrize("name,count1000", TORCHVISION_COUNTS)
def test_torchvision_counts(name, count1000):
    with shapes_only():
        assert trainable_count(models.get(name, num_classes=1000)) == count1000


@pytest.mark.parametrize("depth,count1000", [(18, 11_689_512), (34, 21_797_672)])
def test_tiny_resnet_counts(depth, count1000):
    # 3x3 stride-1 stem (3*3*3*64 = 1,728) instead of 7x7 stride-2 (7*7*3*64 = 9,408).
    with shapes_only():
        model = models.get(f"resnet{depth}_tiny", num_classes=1000)
        assert trainable_count(model) == count1000 - 9_408 + 1_728
        model = models.get(f"resnet{depth}_tiny", num_classes=200)
        assert trainable_count(model) == count1000 - 9_408 + 1_728 - 800 * 513


def test_resnet32_three_branches_reference_totals():
    with shapes_only():
        student = models.multi_branch("resnet32", num_branches=3, num_classes=100)
        trunk = student.get_layer("trunk")
        branches = [student.get_layer(models.branch_name(i)) for i in range(3)]
        assert trainable_count(trunk) == 112_592
        assert [trainable_count(b) for b in branches] == [360_164] * 3
        assert trainable_count(student) == 1_193_084

        ensemble = keras_okd.knowledge.PeerEnsembleHead(100)
        ensemble.build([(None, 64)] * 3)
        assert trainable_count(ensemble) == 192 * 100 + 100
        assert trainable_count(student) + trainable_count(ensemble) == 1_212_384

        gate = keras_okd.knowledge.GateHead(3)
        gate.build((None, 32))
        assert trainable_count(gate) == 32 * 3 + 3 + 2 * 3
        assert trainable_count(student) + trainable_count(gate) == 1_193_189


@pytest.mark.parametrize("name", models.names())
def test_trunk_plus_branch_is_the_single_network(name):
    from keras_okd.models.registry import lookup

    with shapes_only():
        model = models.get(name, num_classes=10)
        assert model.input_shape == (None, *lookup(name).input_shape)
        assert model.output_shape == (None, 10)
        single = trainable_count(model)
        student = models.multi_branch(name, num_branches=2, num_classes=10)
        assert [t.shape for t in student.output["logits"]] == [(None, 10)] * 2
        trunk = trainable_count(student.get_layer("trunk"))
        branch = trainable_count(student.get_layer("branch_0"))
        assert trunk > 0 and branch > 0
        assert trunk + branch == single
        assert trainable_count(student) == trunk + 2 * branch
        assert trainable_count(models.extract_branch(student, 1)) == single
