import numpy as np
import pytest
from conftest import gradient, to_numpy

from keras_okd import losses


def np_softmax(z, tau=1.0):
    z = z / tau
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kl(t, p):
    return np.sum(np.where(t > 0, t * (np.log(np.maximum(t, 1e-30)) - np.log(p)), 0.0), -1)


RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(5, 3, 7)).astype("float32") * 3  # (batch, peers, classes)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_pairwise_kd_matches_numpy(tau):
    targets = np_softmax(RNG.normal(size=(5, 2, 7)), 2.0).astype("float32")
    weights = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 2.0]], "float32")
    got = to_numpy(losses.pairwise_kd(targets, LOGITS, tau, weights))
    p = np_softmax(LOGITS.astype("float64"), tau)
    want = np.zeros(3)
    for i in range(3):
        for j in range(2):
            want[i] += weights[i, j] * np.mean(np_kl(targets[:, j], p[:, i]))
    np.testing.assert_allclose(got, tau**2 * want, rtol=1e-5, atol=1e-6)


def test_kd_divergence_zero_targets_entries_and_sample_weight():
    target = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], "float32")
    student = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], "float32")
    w = np.array([2.0, 0.0], "float32")
    got = float(to_numpy(losses.kd_divergence(target, student, 2.0, sample_weight=w)))
    per = np_kl(target, np_softmax(student.astype("float64"), 2.0))
    assert np.isfinite(got)
    np.testing.assert_allclose(got, 4.0 * np.mean(per * w), rtol=1e-5)


def test_kd_is_zero_when_student_equals_target():
    z = LOGITS[:, :1]
    t = np_softmax(z, 4.0)
    assert abs(float(to_numpy(losses.pairwise_kd(t, z, 4.0, np.ones((1, 1), "float32"))[0]))) < 1e-6


def test_peer_cross_entropy_matches_numpy():
    labels = np.array([0, 6, 3, 3, 1])
    got = to_numpy(losses.peer_cross_entropy(labels, LOGITS))
    p = np_softmax(LOGITS.astype("float64"))
    want = [-np.mean(np.log(p[np.arange(5), i, labels])) for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_ensemble_probabilities_is_mean_of_softmax():
    got = to_numpy(losses.ensemble_probabilities(LOGITS))
    np.testing.assert_allclose(got, np_softmax(LOGITS.astype("float64")).mean(1), rtol=1e-5)


def test_targets_receive_no_gradient():
    targets_logits = RNG.normal(size=(4, 1, 7)).astype("float32")
    student = RNG.normal(size=(4, 1, 7)).astype("float32")

    def loss_of_target(t):
        return losses.pairwise_kd(losses.soften(t, 4.0), student, 4.0, np.ones((1, 1), "float32"))

    def loss_of_student(s):
        return losses.pairwise_kd(losses.soften(targets_logits, 4.0), s, 4.0, np.ones((1, 1), "float32"))

    assert np.all(gradient(loss_of_target, targets_logits) == 0.0)
    assert np.abs(gradient(loss_of_student, student)).sum() > 1e-3
