"""Offline KD (Hinton et al., 2015): the FrozenTeacher part against numpy (value and gradient), the frozen teacher
saved with the distiller but never with the students, bad input, the kd preset, and Keras's own Distiller."""

import keras
import numpy as np
import pytest
from conftest import gradient, to_numpy
from test_losses import np_kl, np_softmax

import keras_okd
from keras_okd import knowledge, losses

RNG = np.random.default_rng(9)
B, M, D, C = 6, 3, 5, 4


def linear_teacher(classes=C, name="teacher"):
    inputs = keras.Input((D,))
    x = keras.layers.BatchNormalization(name="bn")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(classes, bias_initializer="random_normal", name="dense")(x),
                        name=name)
    return model


def student(name):
    inputs = keras.Input((D,))
    return keras.Model(inputs, keras.layers.Dense(C)(inputs), name=name)


def context(inputs):
    return {"index": None, "labels": np.zeros(B, "int32"), "training": True, "sample_weight": None, "inputs": inputs}


def np_teacher(teacher, x):
    kernel, bias = (to_numpy(w).astype("float64") for w in teacher.get_layer("dense").weights)
    bn = teacher.get_layer("bn")
    gamma, beta, mean, var = (to_numpy(w).astype("float64") for w in bn.weights)
    return ((x - mean) / np.sqrt(var + bn.epsilon) * gamma + beta) @ kernel + bias


def test_targets_value_and_gradient_match_numpy():
    teacher = linear_teacher()
    part = knowledge.FrozenTeacher(teacher, temperature=4.0, weight=0.9)
    part.build_for_peers(M, C)
    views = [RNG.normal(size=(B, D)).astype("float32") for _ in range(M)]  # each peer its own view
    z = (RNG.normal(size=(B, M, C)) * 2).astype("float32")
    out = part.targets(keras.ops.convert_to_tensor(z), context(views))
    t = np.stack([np_softmax(np_teacher(teacher, v), 4.0) for v in views], 1)
    np.testing.assert_allclose(to_numpy(out["targets"]), t, rtol=1e-5, atol=1e-7)
    p = np_softmax(z.astype("float64"), 4.0)
    kd = losses.pairwise_kd(out["targets"], z, 4.0, out["pair_weights"])
    np.testing.assert_allclose(to_numpy(kd), [16 * np.mean(np_kl(t[:, i], p[:, i])) for i in range(M)], rtol=1e-5)

    def loss_of_logits(v):
        o = part.targets(v, context(views))
        return losses.pairwise_kd(o["targets"], v, 4.0, o["pair_weights"])
    np.testing.assert_allclose(gradient(loss_of_logits, z), 4.0 * (p - t) / B, rtol=1e-4, atol=1e-6)

    def loss_of_view(v):  # the teacher's input gets no gradient: the target is a constant
        o = part.targets(keras.ops.convert_to_tensor(z), context([v] + views[1:]))
        return losses.pairwise_kd(o["targets"], z, 4.0, o["pair_weights"])
    np.testing.assert_array_equal(gradient(loss_of_view, views[0]), 0.0)


def test_teacher_is_frozen_and_saved_with_the_distiller_not_the_students(tmp_path):
    teacher = linear_teacher()
    keras.utils.set_random_seed(3)
    before = [to_numpy(w).copy() for w in teacher.weights]
    d = keras_okd.methods.kd([student("a"), student("b")], teacher)
    part = d.knowledge[0]
    assert teacher.trainable is False and part.trainable_weights == []
    assert {id(w) for w in teacher.weights} <= {id(w) for w in d.non_trainable_weights}
    assert not {id(w) for w in teacher.weights} & {id(w) for w in d.trainable_weights}
    x = RNG.normal(size=(B, D)).astype("float32")
    part.targets(keras.ops.zeros((B, 2, C)), context([x, x]))  # inference mode: BN statistics unchanged
    for a, b in zip(teacher.weights, before):
        np.testing.assert_array_equal(to_numpy(a), b)
    d.compile(optimizer="sgd")
    d.save(tmp_path / "kd.keras")
    loaded = keras.saving.load_model(tmp_path / "kd.keras")
    for a, b in zip(loaded.knowledge[0].teacher.weights, before):
        np.testing.assert_array_equal(to_numpy(a), b)
    assert loaded.knowledge[0].teacher.trainable is False
    d.students[0].save(tmp_path / "a.keras")
    assert len(keras.saving.load_model(tmp_path / "a.keras").weights) == 2  # the student alone


def test_teacher_from_a_path_or_a_keras_distiller(tmp_path):
    teacher = linear_teacher()
    teacher.save(tmp_path / "teacher.keras")
    from_path = knowledge.FrozenTeacher(str(tmp_path / "teacher.keras"))
    for a, b in zip(from_path.teacher.weights, teacher.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    keras_distiller = keras.distillation.Distiller(
        teacher=teacher, student=student("s"), distillation_losses=keras.distillation.LogitsDistillation(4.0))
    assert knowledge.FrozenTeacher(keras_distiller).teacher is teacher


def test_same_loss_as_keras_distiller_for_each_student():
    """kd's loss of one student equals keras.distillation.Distiller's (student_loss_weight = 1 - alpha, a from-logits
    cross-entropy, and LogitsDistillation's loss given as a KLDivergence instance: in Keras 3.15 the default string
    'kl_divergence' resolves to a plain function, and LogitsDistillation then skips its softmax and tau^2)."""
    teacher, s = linear_teacher(), student("s")
    x = RNG.normal(size=(B, D)).astype("float32")
    y = RNG.integers(0, C, B)
    keras_distiller = keras.distillation.Distiller(
        teacher=teacher, student=s, student_loss_weight=0.1,
        distillation_losses=keras.distillation.LogitsDistillation(temperature=4.0, loss=keras.losses.KLDivergence()))
    keras_distiller.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    z = s(x)
    want = float(to_numpy(keras_distiller.compute_loss(x=x, y=y, y_pred=z, training=False)))
    d = keras_okd.methods.kd([s, student("other")], teacher, temperature=4.0, alpha=0.9)
    part = d.knowledge[0]
    out = part.targets(keras.ops.stack([z, z], 1), context([x, x]))
    peer_logits = keras.ops.expand_dims(z, 1)
    ours = (d.ce_weight * losses.peer_cross_entropy(y, peer_logits)[0]
            + part.weight * losses.pairwise_kd(out["targets"][:, :1], peer_logits, 4.0, np.ones((1, 1)))[0])
    np.testing.assert_allclose(float(to_numpy(ours)), want, rtol=1e-5)


def test_missing_inputs_in_the_context_are_refused_clearly():
    part = knowledge.FrozenTeacher(linear_teacher())
    part.build_for_peers(2, C)
    ctx = context(None)
    del ctx["inputs"]
    with pytest.raises(ValueError, match=r"context\['inputs'\]"):
        part.targets(keras.ops.zeros((B, 2, C)), ctx)


@pytest.mark.parametrize("build, message", [
    (lambda: knowledge.FrozenTeacher(linear_teacher(classes=7)).build_for_peers(2, C), "7 classes but the peers"),
    (lambda: knowledge.FrozenTeacher("/nonexistent/teacher.keras"), "no saved teacher model"),
    (lambda: knowledge.FrozenTeacher(object()), "pretrained teacher"),
    (lambda: keras_okd.methods.kd([student("a"), student("b")], None), "needs a pretrained teacher"),
    (lambda: keras_okd.methods.kd(student("a"), linear_teacher()), "keras.distillation.Distiller"),
    (lambda: keras_okd.methods.kd([student("a")], linear_teacher()), "keras.distillation.Distiller"),
    (lambda: keras_okd.methods.kd([student("a"), student("b")], linear_teacher(), alpha=1.5), "alpha"),
    (lambda: keras_okd.methods.kd([student("a"), student("b")], linear_teacher(classes=7)), "7 classes"),
])
def test_bad_input_is_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_kd_preset_composes_hinton_kd():
    teacher = linear_teacher()
    d = keras_okd.methods.kd([student("a"), student("b")], teacher)
    (part,) = d.knowledge
    assert isinstance(part, knowledge.FrozenTeacher) and part.name == "kd" and part.teacher is teacher
    assert (part.temperature, part.weight, d.ce_weight) == (4.0, 0.9, pytest.approx(0.1))
    assert keras_okd.methods.get("kd") is keras_okd.methods.kd
    branches = keras_okd.models.multi_branch("simple_cnn", 2, num_classes=C, input_shape=(8, 8, 1))
    image_teacher = keras_okd.models.get("simple_cnn", num_classes=C, input_shape=(8, 8, 1))
    assert keras_okd.methods.kd(branches, image_teacher).num_peers == 2


@pytest.mark.heavy
def test_kd_trains_on_digits_from_a_trained_teacher():
    (x, y), (x_val, y_val) = keras_okd.data.digits_arrays()
    teacher = keras_okd.models.get("simple_cnn", num_classes=10, input_shape=(8, 8, 1), width=8)
    students = [keras_okd.models.get("simple_cnn", num_classes=10, input_shape=(8, 8, 1), width=4) for _ in range(2)]
    d = keras_okd.methods.kd(students, teacher, views=keras_okd.data.peer_views(8, 8, padding=1))
    teacher.trainable = True
    teacher.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x[:640], y[:640], batch_size=64, epochs=3, verbose=0)
    teacher.trainable = False
    frozen = [to_numpy(w).copy() for w in teacher.weights]
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    history = d.fit(x[:960], y[:960], validation_data=(x_val, y_val), batch_size=64, epochs=3, verbose=0).history
    assert history["ensemble_accuracy"][-1] > history["ensemble_accuracy"][0] + 0.05
    assert "student_0_kd" in history
    for a, b in zip(teacher.weights, frozen):  # never trained, BN statistics untouched
        np.testing.assert_array_equal(to_numpy(a), b)
