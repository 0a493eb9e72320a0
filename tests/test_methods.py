import keras
import pytest
from conftest import tiny_student

import keras_okd
from keras_okd.knowledge.schedules import WarmUp
from keras_okd.knowledge import PeerDistillation, SpatialIntegrator, TemporalAccumulator


def students(k=2):
    return [tiny_student(name=f"s{i}") for i in range(k)]


def test_tsb_has_the_papers_defaults():
    d = keras_okd.methods.tsb(students(), num_train_samples=50)
    ta, si = d.knowledge
    assert isinstance(ta, TemporalAccumulator) and isinstance(si, SpatialIntegrator)
    assert (ta.beta, ta.temperature, ta.weight, ta.reduction) == (0.8, 4.0, 0.5, "sum")
    assert (si.temperature, si.weight) == (4.0, 0.5)
    assert d.schedules == {"ta": [WarmUp(20)], "si": [WarmUp(20)]}
    assert tuple(ta.bank.shape) == (50, 2, 10)


@pytest.mark.parametrize(
    "temporal, spatial, kinds",
    [
        (False, False, [PeerDistillation]),
        (True, False, [TemporalAccumulator]),
        (False, True, [PeerDistillation, SpatialIntegrator]),
        (True, True, [TemporalAccumulator, SpatialIntegrator]),
    ],
)
def test_tsb_ablation_rows(temporal, spatial, kinds):
    d = keras_okd.methods.tsb(students(3), num_train_samples=10, temporal=temporal, spatial=spatial)
    assert [type(p) for p in d.knowledge] == kinds
    assert all(p.temperature == 4.0 and p.weight == 0.5 for p in d.knowledge)
    assert set(d.schedules) == {p.name for p in d.knowledge}


def test_dml_and_independent():
    d = keras_okd.methods.dml(students(3), temperature=2.0)
    (part,) = d.knowledge
    assert isinstance(part, PeerDistillation) and part.reduction == "mean" and part.temperature == 2.0
    assert keras_okd.methods.independent(students()).knowledge == []


def test_duplicate_student_names_are_made_unique():
    a, b = tiny_student(name="same"), tiny_student(name="same")
    d = keras_okd.methods.independent([a, b])
    assert [s.name for s in d.students] == ["same", "same_1"]
    assert d.ensemble_model().output_shape == (None, 10)


def test_config_round_trip_rebuilds_the_same_method():
    d = keras_okd.methods.tsb(students(), num_train_samples=12, beta=0.6, warmup_epochs=3)
    clone = keras_okd.OnlineDistiller.from_config(d.get_config())
    assert [p.get_config() for p in clone.knowledge] == [p.get_config() for p in d.knowledge]
    assert clone.schedules == d.schedules
    assert isinstance(clone.students[0], keras.Model)
