import math

import numpy as np
import pytest
from conftest import tiny_student, to_numpy

import keras_okd
from keras_okd.distiller.callbacks import KnowledgeSchedule
from keras_okd.knowledge.schedules import Decay, RampUp, WarmUp


def test_warmup_values():
    assert [WarmUp(20)(e) for e in (0, 1, 19, 20, 239)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert WarmUp(0)(0) == 1.0


def test_rampup_is_the_intended_formula():
    ramp = RampUp(80)
    for e in (0, 1, 40, 79):
        assert ramp(e) == pytest.approx(math.exp(-5 * (1 - e / 80) ** 2))
    assert ramp(80) == 1.0 and ramp(200) == 1.0
    assert ramp(1) < 0.01  # the public code's bug would give ~1 here (REFERENCE.md)


def test_decay_shapes():
    assert Decay(gamma=0.5)(4) == pytest.approx(math.exp(-2.0))
    assert Decay(gamma=0.5, complement=True)(4) == pytest.approx(1 - math.exp(-2.0))
    assert Decay("cosine", total_epochs=10)(5) == pytest.approx(0.5)
    assert Decay("linear", total_epochs=10)(3) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="total_epochs"):
        Decay("cosine")
    with pytest.raises(ValueError, match="shape"):
        Decay("step")


def test_schedule_callback_sets_part_variables_and_rejects_unknown_parts():
    students = [tiny_student(name="a"), tiny_student(name="b")]
    distiller = keras_okd.methods.tsb(students, num_train_samples=10, warmup_epochs=3)
    (callback,) = keras_okd.callbacks.for_method(distiller)
    callback.set_model(distiller)
    callback.on_epoch_begin(2)
    assert [float(to_numpy(p.schedule)) for p in distiller.knowledge] == [0.0, 0.0]
    callback.on_epoch_begin(3)
    assert [float(to_numpy(p.schedule)) for p in distiller.knowledge] == [1.0, 1.0]
    bad = KnowledgeSchedule({"nope": [WarmUp(1)]})
    bad.set_model(distiller)
    with pytest.raises(ValueError, match="nope"):
        bad.on_epoch_begin(0)


def test_product_of_schedules():
    cb = KnowledgeSchedule({"x": [RampUp(10), Decay(gamma=1.0)]})
    np.testing.assert_allclose(cb.values(5)["x"], math.exp(-5 * 0.25) * math.exp(-5))


@pytest.mark.parametrize("epochs, warned", [(2, True), (1, True), (3, False)])
def test_a_warm_up_as_long_as_the_fit_is_named_at_fit_time(epochs, warned, caplog):
    schedule = keras_okd.callbacks.KnowledgeSchedule({"ta": [keras_okd.callbacks.WarmUp(2)],
                                                      "si": [keras_okd.callbacks.RampUp(4)]})
    schedule.set_params({"epochs": epochs, "verbose": 0})
    with caplog.at_level("WARNING", logger="keras_okd.callbacks"):
        schedule.on_train_begin()
    if warned:
        assert caplog.messages == [
            f"keras_okd: knowledge part 'ta' has weight 0 in all {epochs} epochs of this fit ('ta': WarmUp(epochs=2): "
            "a warm-up as long as the run or longer), so the students train exactly as independent training would. "
            "Train for more epochs than the warm-up, or shorten it (TSB: warmup_epochs; the CLI demo: "
            "--warmup-epochs)."]
    else:
        assert caplog.messages == []  # 'si' ramps up from a small non-zero weight: never idle


@pytest.mark.heavy
def test_the_distillers_own_warm_up_is_named_in_fit(capsys):
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype("float32")
    y = np.arange(8) % 10
    distiller = keras_okd.methods.tsb([tiny_student(), tiny_student()], num_train_samples=8, warmup_epochs=1)
    distiller.compile(optimizer="sgd")
    distiller.fit(x, y, epochs=1, batch_size=8, verbose=1)
    assert capsys.readouterr().out.count("knowledge parts 'ta', 'si' have weight 0 in all 1 epochs of this fit "
                                         "('ta': WarmUp(epochs=1); 'si': WarmUp(epochs=1)") == 1


@pytest.mark.heavy("tensorflow", "jax", "torch")
def test_the_progress_bar_shows_a_few_values_and_history_keeps_all(capsys):
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype("float32")
    y = np.arange(8) % 10
    distiller = keras_okd.methods.tsb([tiny_student(), tiny_student()], num_train_samples=8, warmup_epochs=0)
    distiller.compile(optimizer="sgd")
    history = distiller.fit(x, y, validation_data=(x, y), epochs=1, batch_size=8, verbose=1).history
    assert {"student_0_ce", "val_student_1_logit_std", "student_0_ta", "val_student_1_si"} <= set(history)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    shown = [item.split(":")[0] for item in last.split(" - ")[1:]]
    assert shown == ["ensemble_accuracy", "loss", "student_0_accuracy", "student_1_accuracy", "val_ensemble_accuracy",
                     "val_loss", "val_student_0_accuracy", "val_student_1_accuracy"], last
    distiller.fit(x, y, validation_data=(x, y), epochs=1, batch_size=8, verbose=1, progress="all")
    everything = capsys.readouterr().out.strip().splitlines()[-1]
    assert " - student_0_ce: " in everything and " - val_student_1_logit_std: " in everything
    with pytest.raises(ValueError, match="progress must be one of .'short', 'all'. .*got 'some'"):
        distiller.fit(x, y, epochs=1, batch_size=8, progress="some")


def test_decay_shapes_are_kerass_schedules_of_the_epoch():
    import keras

    schedules = keras.optimizers.schedules
    pairs = [(Decay("exponential", gamma=0.5), schedules.ExponentialDecay(1.0, 1, math.exp(-0.5))),
             (Decay("cosine", total_epochs=7), schedules.CosineDecay(1.0, 7)),
             (Decay("linear", total_epochs=7), schedules.PolynomialDecay(1.0, 7, 0.0))]
    for ours, keras_schedule in pairs:
        for epoch in range(10):
            assert ours(epoch) == pytest.approx(float(keras_schedule(epoch)), rel=1e-6, abs=1e-7), (ours, epoch)


def test_the_schedule_callback_reads_the_parts_own_schedules_from_its_model():
    students = [tiny_student(name="a"), tiny_student(name="b")]
    distiller = keras_okd.methods.tsb(students, num_train_samples=10, warmup_epochs=3)
    assert [p.schedules for p in distiller.knowledge] == [(WarmUp(3),), (WarmUp(3),)]
    callback = KnowledgeSchedule()
    with pytest.raises(ValueError, match=r"reads the knowledge parts' schedules from its model: call set_model"):
        callback.values(0)
    callback.set_model(distiller)
    assert callback.values(2) == {"ta": 0.0, "si": 0.0} and callback.idle_parts(3) == ["ta", "si"]
    distiller.knowledge[1].schedules = (RampUp(4),)  # what the callback reads is the part's, at every epoch
    callback.on_epoch_begin(3)
    assert [float(to_numpy(p.schedule)) for p in distiller.knowledge] == [1.0, pytest.approx(math.exp(-5 / 16))]
