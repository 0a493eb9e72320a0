"""Peers: features tapped by layer name (functional, nested, per peer), a part's own per-peer terms, bad names."""

import keras
import numpy as np
import pytest
from conftest import tiny_student, to_numpy
from keras import ops

import keras_okd

N = 32
(X_ALL, Y_ALL), _ = keras_okd.data.digits_arrays()
X, Y = X_ALL[:N], Y_ALL[:N]


class MeanSquare(keras_okd.knowledge.KnowledgePart):
    """Each peer's term: the mean square of its tapped features (a stand-in for a feature-distillation loss)."""

    def targets(self, peer_logits, context):
        terms = [sum(ops.mean(ops.square(ops.cast(context["peer_features"][i][n], "float32")))
                     for n in self.layers_for_peer(i)) for i in range(self.num_peers)]
        return {"peer_losses": ops.stack(terms)}


def np_mean_square_of(model, layer, x):
    probe = keras.Model(model.inputs, model.get_layer(layer).output)
    return float(np.mean(np.square(to_numpy(probe(x, training=True)))))


def test_a_part_reads_named_layers_of_every_peer_and_its_terms_join_the_loss():
    students = [tiny_student(name="a"), tiny_student(name="b", width=6)]
    names = [s.layers[1].name for s in students]  # each student's first convolution (auto-named)
    part = MeanSquare(weight=0.25, layers=[(n,) for n in names], name="ms")
    d = keras_okd.OnlineDistiller(students, [part])
    shapes = d.peers.feature_shapes()["peer_features"]
    assert shapes == [{names[0]: (None, 8, 8, 4)}, {names[1]: (None, 8, 8, 6)}]
    d.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = d.evaluate(X, Y, batch_size=N, verbose=0, return_dict=True)
    for i, student in enumerate(students):
        np.testing.assert_allclose(logs[f"student_{i}_ms"], np_mean_square_of(student, names[i], X), rtol=1e-5)
    ce = logs["student_0_ce"] + logs["student_1_ce"]
    np.testing.assert_allclose(logs["loss"], ce + 0.25 * (logs["student_0_ms"] + logs["student_1_ms"]), rtol=1e-5)


def test_layers_can_differ_per_peer_and_reach_into_nested_models():
    student = keras_okd.models.multi_branch("simple_cnn", 2, input_shape=(8, 8, 1), width=4)
    inner = [layer.name for layer in student.get_layer("branch_0").layers]
    name = inner[1][len("b0_"):]
    part = MeanSquare(weight=0.0, layers=(f"branch_{{peer}}/b{{peer}}_{name}",), name="ms")
    d = keras_okd.OnlineDistiller(student, [part])
    d.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = d.evaluate(X, Y, batch_size=N, verbose=0, return_dict=True)
    trunk = to_numpy(student.get_layer("trunk")(X, training=False))
    for i in range(2):
        branch = student.get_layer(f"branch_{i}")
        probe = keras.Model(branch.inputs, branch.get_layer(f"b{i}_{name}").output)
        want = float(np.mean(np.square(to_numpy(probe(trunk, training=False)))))
        np.testing.assert_allclose(logs[f"branch_{i}_ms"], want, rtol=1e-5)

    students = [tiny_student(name="a"), tiny_student(name="b")]
    per_peer = MeanSquare(layers=[(students[0].layers[1].name,), (students[1].layers[2].name,)], name="ms")
    d = keras_okd.OnlineDistiller(students, [per_peer])
    assert list(d.peers.feature_shapes()["peer_features"][1]) == [students[1].layers[2].name]


def test_unknown_layers_and_subclassed_students_are_refused_clearly():
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        keras_okd.OnlineDistiller([tiny_student(name="a"), tiny_student(name="b")], [MeanSquare(layers=("nope",))])
    with pytest.raises(ValueError, match="3 per-peer sequences for 2 peers"):
        keras_okd.OnlineDistiller([tiny_student(name="a"), tiny_student(name="b")],
                                  [MeanSquare(layers=[("x",), ("y",), ("z",)])])

    class Subclassed(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(10)

        def call(self, x):
            return self.dense(ops.reshape(x, (-1, 64)))

    a, b = Subclassed(name="a"), Subclassed(name="b")
    a(X[:1]), b(X[:1])
    with pytest.raises(ValueError, match="functional"):
        keras_okd.OnlineDistiller([a, b], [MeanSquare(layers=("dense",))])


def test_tapping_shares_the_students_weights_and_exports_stay_plain():
    students = [tiny_student(name="a"), tiny_student(name="b")]
    d = keras_okd.OnlineDistiller(students, [MeanSquare(layers=[(s.layers[1].name,) for s in students])])
    d.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [to_numpy(w).copy() for w in students[0].weights]
    d.fit(X, Y, epochs=1, batch_size=16, verbose=0)
    assert any(np.abs(to_numpy(w) - b).max() > 0 for w, b in zip(students[0].weights, before))
    assert len(d.peer_model(0).weights) == len(students[0].weights)


def test_teacher_ema_warmup_rate():
    students = [tiny_student(name="a"), tiny_student(name="b")]
    teacher = keras_okd.distiller.teacher.MeanTeacher(students, eta=0.01, warmup=True)
    rates = []
    for _ in range(3):
        rates.append(float(to_numpy(teacher.rate())))
        teacher.update(students)
    assert rates == pytest.approx([1 / 2, 1 / 3, 1 / 4])
    teacher.updates.assign(1000.0)
    assert float(to_numpy(teacher.rate())) == pytest.approx(0.01)


def test_a_sequential_built_from_keras_input_is_a_student():
    # Keras gives such a model `outputs` but no `output`; it trains beside a functional student
    sequential = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)], name="seq")
    distiller = keras_okd.methods.dml([sequential, tiny_student(name="f")])
    distiller.compile(optimizer="sgd")
    x = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
    distiller.fit(x, np.arange(8) % 10, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_allclose(to_numpy(distiller.students[0](x)), to_numpy(sequential(x)))
    unbuilt = keras.Sequential([keras.layers.Dense(10)], name="unbuilt")
    with pytest.raises(ValueError, match=r"students\[0\] \(unbuilt\) has no known output; build it first"):
        keras_okd.methods.dml([unbuilt, tiny_student(name="g")])


def test_views_that_cannot_compile_are_accepted_with_a_warning_naming_them():
    class Eager(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.supports_jit = False

        def call(self, x, training=None):
            return x

    with pytest.warns(UserWarning, match=r"views layer 'eager_views' \(Eager\) reports supports_jit=False"):
        distiller = keras_okd.methods.kdcl([tiny_student(name="a"), tiny_student(name="b")], views=Eager(name="eager_views"))
    assert distiller.views.name == "eager_views"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the library's own views compile: no warning
        keras_okd.methods.kdcl([tiny_student(name="c"), tiny_student(name="d")],
                               views=keras_okd.data.peer_views(8, 8, padding=1))
