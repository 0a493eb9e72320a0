"""DKEL's decoupled teacher initialisation against an independent one-step SGD computation in numpy.

Decision (see keras_okd/methods/dkel.py): the initialisation minimises the SUM of the teacher peers' cross-entropies,
so every teacher peer's own weights take the step `-lr * grad CE_p` at the paper's lr 0.01, and a shared trunk the
step of the summed gradient (DKEL's public code averages, at lr 0.001: the same as a sum at lr 0.001 / m).
"""

import keras
import numpy as np
import pytest
from conftest import to_numpy

import keras_okd

RNG = np.random.default_rng(11)
B, D, H, C = 6, 5, 4, 3
LR = 0.01


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ce_grad(logits, labels):
    """d mean_b CE(logits_b, y_b) / d logits."""
    return (np_softmax(logits) - np.eye(C)[labels]) / len(labels)


def linear_student(name):
    inputs = keras.Input((D,))
    return keras.Model(inputs, keras.layers.Dense(C, kernel_initializer="glorot_normal",
                                                  bias_initializer="random_normal")(inputs), name=name)


def shared_trunk_student(m):
    """A hand-made multi-branch student: h = x A + a (shared), z_k = h W_k + w_k."""
    inputs = keras.Input((D,))
    h = keras.layers.Dense(H, bias_initializer="random_normal", name="trunk")(inputs)
    logits = [keras.layers.Dense(C, bias_initializer="random_normal", name=f"head_{k}")(h) for k in range(m)]
    return keras.Model(inputs, {"logits": logits, "features": [h] * m, "shared_features": h})


def data():
    return RNG.normal(size=(B, D)).astype("float32"), RNG.integers(0, C, B)


def test_independent_teachers_each_take_one_sgd_step_on_their_own_cross_entropy():
    students = [linear_student("a"), linear_student("b"), linear_student("c")]
    d = keras_okd.OnlineDistiller(students, teacher_eta=0.5, teacher_init_steps=1, teacher_init_learning_rate=LR)
    x, y = data()
    start = [[to_numpy(w).copy() for w in s.weights] for s in students]
    d.initialize_teacher([(x, y)])
    for (kernel, bias), teacher in zip(start, d.teachers):
        dz = ce_grad(x.astype("float64") @ kernel + bias, y)
        np.testing.assert_allclose(to_numpy(teacher.weights[0]), kernel - LR * x.T @ dz, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(to_numpy(teacher.weights[1]), bias - LR * dz.sum(0), rtol=1e-5, atol=1e-7)
    for s, (kernel, bias) in zip(students, start):  # the students are untouched
        np.testing.assert_array_equal(to_numpy(s.weights[0]), kernel)


@pytest.mark.parametrize("m", [2, 3])
def test_shared_trunk_takes_the_step_of_the_summed_cross_entropies(m):
    student = shared_trunk_student(m)
    d = keras_okd.OnlineDistiller(student, teacher_eta=0.5, teacher_init_steps=1, teacher_init_learning_rate=LR)
    x, y = data()
    w = {v.path: to_numpy(v).astype("float64") for v in student.weights}
    A, a = w["trunk/kernel"], w["trunk/bias"]
    h = x @ A + a
    want = {"trunk/kernel": A.copy(), "trunk/bias": a.copy()}
    dh = np.zeros_like(h)
    for k in range(m):
        Wk, wk = w[f"head_{k}/kernel"], w[f"head_{k}/bias"]
        dz = ce_grad(h @ Wk + wk, y)  # d CE_k / d z_k: the sum's gradient, not divided by m
        want[f"head_{k}/kernel"] = Wk - LR * h.T @ dz
        want[f"head_{k}/bias"] = wk - LR * dz.sum(0)
        dh += dz @ Wk.T
    want["trunk/kernel"] -= LR * x.T @ dh
    want["trunk/bias"] -= LR * dh.sum(0)
    d.initialize_teacher([(x, y)])
    got = {v.path: to_numpy(t) for v, t in zip(student.weights, d.teachers[0].weights)}  # same order
    for name in w:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7, err_msg=name)
    # a mean of the cross-entropies would have moved every head by 1/m of this step
    moved = np.abs(got["head_0/kernel"] - w["head_0/kernel"]).max()
    assert moved > 1e-4
