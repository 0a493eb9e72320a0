"""Mean teacher, multi-branch students and the PCL / DKEL / ONE / KDCL presets, end to end."""

import math

import keras
import numpy as np
import pytest
from conftest import tiny_student, to_numpy

import keras_okd

(X_ALL, Y_ALL), (X_VAL, Y_VAL) = keras_okd.data.digits_arrays()
X, Y = X_ALL[:128], Y_ALL[:128]


def branches(per_branch_inputs=True, m=3):
    return keras_okd.models.multi_branch(
        "simple_cnn", m, num_classes=10, input_shape=(8, 8, 1), per_branch_inputs=per_branch_inputs, width=4
    )


def views():
    return keras_okd.data.peer_views(8, 8, padding=1)


def weights(model):
    return [to_numpy(w).copy() for w in model.weights if "float" in str(w.dtype)]


def test_teacher_is_the_ema_of_every_step_computed_by_hand():
    eta = 0.3
    students = [tiny_student(name="a"), tiny_student(name="b")]
    d = keras_okd.OnlineDistiller(
        students, [keras_okd.knowledge.TeacherPeers(temperature=2.0)], teacher_eta=eta
    )
    d.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    teacher_ids = {id(v) for t in d.teachers for v in t.weights}
    assert not teacher_ids & {id(v) for v in d.trainable_variables}  # the teacher gets no gradient
    expected = [weights(s) for s in students]  # t_0: a copy of the students
    for t, s in zip(d.teachers, expected):
        for a, b in zip(weights(t), s):
            np.testing.assert_array_equal(a, b)
    for step in range(3):
        d.train_on_batch(X[step * 32:(step + 1) * 32], Y[step * 32:(step + 1) * 32])
        expected = [[eta * s + (1 - eta) * t for s, t in zip(weights(st), e)] for st, e in zip(students, expected)]
    d.sync_teacher()
    for teacher, want in zip(d.teachers, expected):
        for got, w in zip(weights(teacher), want):
            np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    d.sync_teacher()  # nothing pending: no change
    for teacher, want in zip(d.teachers, expected):
        for got, w in zip(weights(teacher), want):
            np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)


def test_call_in_training_leaves_the_teacher_alone_and_begin_training_step_applies_the_owed_update():
    eta = 0.3
    students = [tiny_student(name="a"), tiny_student(name="b")]
    d = keras_okd.OnlineDistiller(students, [keras_okd.knowledge.TeacherPeers(temperature=2.0)], teacher_eta=eta)
    d.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    d.train_on_batch(X[:32], Y[:32])  # leaves the update of this step owed
    assert float(to_numpy(d.teacher.pending)) == 1.0
    teacher_before = [weights(t) for t in d.teachers]
    out = d(X[32:64], training=True)
    assert set(out) == {"peer_logits", "probabilities", "teacher_logits"}  # nothing about the step's state
    assert float(to_numpy(d.teacher.pending)) == 1.0
    for t, before in zip(d.teachers, teacher_before):
        for got, want in zip(weights(t), before):
            np.testing.assert_array_equal(got, want)
    assert keras_okd.backend.step_value(d) is None  # outside train_step: no copy for compute_loss to restore
    students_now = [weights(s) for s in students]
    d.begin_training_step()
    for t, before, s in zip(d.teachers, teacher_before, students_now):
        for got, tb, sb in zip(weights(t), before, s):
            np.testing.assert_allclose(got, eta * sb + (1 - eta) * tb, rtol=1e-5, atol=1e-6)


class _Snapshot(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.teacher = weights(self.model.teachers[0])
        self.student = weights(self.model.students[0])


@pytest.mark.heavy
def test_dkel_decoupled_initialisation_survives_the_first_update():
    eta = 0.25
    d = keras_okd.methods.dkel(branches(), views=views(), teacher_eta=eta, init_steps=2, init_learning_rate=0.5)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True))
    snap = _Snapshot()
    d.fit(X, Y, batch_size=32, epochs=1, steps_per_epoch=1, verbose=0, callbacks=[snap])
    assert d.teacher.is_initialized
    # decoupled: the teacher was trained away from the student before the first step
    assert max(np.abs(t - s).max() for t, s in zip(snap.teacher, snap.student)) > 1e-3
    student_after = weights(d.students[0])
    want = [eta * s + (1 - eta) * t for s, t in zip(student_after, snap.teacher)]
    for got, w in zip(weights(d.teachers[0]), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    assert max(np.abs(g - s).max() for g, s in zip(weights(d.teachers[0]), student_after)) > 1e-4
    # a second fit does not initialise again
    before = weights(d.teachers[0])
    d.fit(X, Y, batch_size=32, epochs=1, steps_per_epoch=1, verbose=0)
    moved = [eta * s + (1 - eta) * t for s, t in zip(weights(d.students[0]), before)]
    for got, w in zip(weights(d.teachers[0]), moved):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)


def test_dkel_schedules_omega_and_pcl_rampup():
    d = keras_okd.methods.dkel(branches(), gamma=0.5)
    cb = keras_okd.callbacks.KnowledgeSchedule(d.schedules)
    for e in (0, 1, 4, 10):
        values = cb.values(e)
        assert values["ek"] == pytest.approx(math.exp(-0.5 * e))
        assert values["dk"] == pytest.approx(1 - math.exp(-0.5 * e))
        assert "pe" not in values  # Eq. 12: L_pe is not scheduled
    cos = keras_okd.callbacks.KnowledgeSchedule(keras_okd.methods.dkel(branches(), decay="cosine", total_epochs=10).schedules)
    assert cos.values(5)["ek"] == pytest.approx(0.5)
    p = keras_okd.callbacks.KnowledgeSchedule(keras_okd.methods.pcl(branches()).schedules)
    assert p.values(40) == {"pe": pytest.approx(math.exp(-5 * 0.25)), "pm": pytest.approx(math.exp(-5 * 0.25))}
    assert p.values(80) == {"pe": 1.0, "pm": 1.0}


def test_dkel_ablation_switches():
    """Table 3: `decoupled` switches the teacher's initialisation (pm -> dk), `decaying_ensemble` adds omega * ek and
    weighs the teacher-peer term 1 - omega; nothing else changes."""
    rows = {(dc, de): keras_okd.methods.dkel(branches(), decoupled=dc, decaying_ensemble=de)
            for dc in (False, True) for de in (False, True)}
    assert [p.name for p in rows[False, False].knowledge] == ["pe", "pm"]
    assert [p.name for p in rows[True, False].knowledge] == ["pe", "dk"]
    assert [p.name for p in rows[False, True].knowledge] == ["pe", "pm", "ek"]
    assert [p.name for p in rows[True, True].knowledge] == ["pe", "dk", "ek"]
    for (dc, de), d in rows.items():
        assert d.teacher_init_steps == (1 if dc else 0)
        values = keras_okd.callbacks.KnowledgeSchedule(d.schedules).values(2)
        teacher_term = "dk" if dc else "pm"
        assert values == ({teacher_term: pytest.approx(1 - math.exp(-1.0)), "ek": pytest.approx(math.exp(-1.0))}
                          if de else {})
        assert {(type(p).__name__, p.temperature, p.weight) for p in d.knowledge if p.name != "ek"} == {
            ("PeerEnsemble", 3.0, 1.0), ("TeacherPeers", 3.0, 1.0)}


def _fit_improves(distiller, epochs=3):
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True))
    history = distiller.fit(X_ALL, Y_ALL, validation_data=(X_VAL, Y_VAL), batch_size=64, epochs=epochs, verbose=0)
    acc = history.history["ensemble_accuracy"]
    assert acc[-1] > acc[0] + 0.05, acc
    assert np.isfinite(history.history["val_loss"]).all()
    return history


@pytest.mark.heavy
@pytest.mark.parametrize("method", ["pcl", "dkel", "one", "kdcl"])
def test_each_preset_trains_on_digits(method):
    if method == "one":
        d = keras_okd.methods.one(branches(per_branch_inputs=False), rampup_epochs=2)
    elif method == "kdcl":
        d = keras_okd.methods.kdcl([tiny_student(name=f"s{i}") for i in range(3)], views=views())
    else:
        d = keras_okd.methods.get(method)(branches(), views=views())
    history = _fit_improves(d)
    if method in ("pcl", "dkel"):
        assert "val_teacher_ensemble_accuracy" in history.history and "pe_ce" in history.history


def test_temporal_accumulator_with_a_mean_teacher():
    students = [tiny_student(name="a"), tiny_student(name="b")]
    parts = [keras_okd.knowledge.TemporalAccumulator(num_samples=len(X), beta=0.8),
             keras_okd.knowledge.TeacherPeers(temperature=2.0, name="mt")]
    d = keras_okd.OnlineDistiller(students, parts, teacher_eta=0.1)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    before = weights(d.teachers[0])
    history = d.fit({"inputs": X, "index": np.arange(len(X))}, Y, batch_size=32, epochs=2, verbose=0)
    assert to_numpy(d.knowledge[0].counts).tolist() == [2] * len(X)
    assert max(np.abs(a - b).max() for a, b in zip(weights(d.teachers[0]), before)) > 1e-4
    assert {"student_0_ta", "student_0_mt", "teacher_0_accuracy"} <= set(history.history)


@pytest.mark.heavy
def test_dkel_deploys_the_teacher_and_exports_plain_models(tmp_path):
    d = keras_okd.methods.dkel(branches(), views=views(), teacher_eta=0.5)
    d.compile(optimizer=keras.optimizers.SGD(0.05))
    d.fit(X, Y, batch_size=32, epochs=1, verbose=0)
    teacher_logits = np.stack([to_numpy(l) for l in d.teachers[0]([X_VAL] * 3, training=False)["logits"]], 1)
    np.testing.assert_allclose(d.predict(X_VAL, verbose=0), np.mean(
        np.exp(teacher_logits) / np.exp(teacher_logits).sum(-1, keepdims=True), 1), rtol=1e-4, atol=1e-6)
    peer = d.peer_model(1)
    np.testing.assert_allclose(to_numpy(peer(X_VAL, training=False)), teacher_logits[:, 1], rtol=1e-4, atol=1e-5)
    peer.save(tmp_path / "teacher_branch1.keras")
    d.ensemble_model().save(tmp_path / "ensemble.keras")
    loaded = keras.saving.load_model(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(to_numpy(loaded(X_VAL)), d.predict(X_VAL, verbose=0), rtol=1e-4, atol=1e-6)
    assert d.peer_model(1, teacher=False).count_params() == peer.count_params()


@pytest.mark.heavy
def test_branch_distiller_round_trips_as_keras_file(tmp_path):
    d = keras_okd.methods.pcl(branches(), views=views(), teacher_eta=0.2)
    d.compile(optimizer=keras.optimizers.SGD(0.05))
    d.fit(X, Y, batch_size=32, epochs=1, verbose=0)
    d.save(tmp_path / "pcl.keras")
    loaded = keras.saving.load_model(tmp_path / "pcl.keras")
    assert loaded.multi_branch and loaded.deploy == "teacher" and loaded.teacher_eta == 0.2
    np.testing.assert_allclose(loaded.predict(X_VAL, verbose=0), d.predict(X_VAL, verbose=0), rtol=1e-5, atol=1e-6)
    for a, b in zip(weights(loaded.knowledge[0].head), weights(d.knowledge[0].head)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: keras_okd.methods.pcl([tiny_student(), tiny_student()]), "multi-branch"),
        (lambda: keras_okd.methods.one(tiny_student()), "multi-branch"),
        (lambda: keras_okd.methods.kdcl(branches()), "independent students"),
        (lambda: keras_okd.methods.dkel(branches(m=2), num_branches=3), "num_branches=3"),
        (lambda: keras_okd.methods.pcl(branches(per_branch_inputs=False), views=views()), "per_branch_inputs"),
        (lambda: keras_okd.methods.pcl(branches(), teacher_eta=0.0), "teacher_eta"),
        (lambda: keras_okd.methods.dkel(branches(), teacher_eta=1.5), "teacher_eta"),
        (lambda: keras_okd.methods.dkel(branches(), gamma=0.0), "gamma"),
        (lambda: keras_okd.methods.kdcl([tiny_student(), tiny_student()], alpha=2.0), "alpha"),
        (lambda: keras_okd.OnlineDistiller([tiny_student(), tiny_student()],
                                           [keras_okd.knowledge.TeacherPeers()]), "teacher_eta"),
    ],
)
def test_bad_method_input_is_refused_before_training(build, message):
    with pytest.raises(ValueError, match=message):
        build()
