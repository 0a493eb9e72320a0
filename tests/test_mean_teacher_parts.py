"""The knowledge parts of issue 4, each against an independent numpy computation."""

import keras
import numpy as np
import pytest
from conftest import to_numpy
from test_losses import np_kl, np_softmax

from keras_okd import knowledge, losses

RNG = np.random.default_rng(3)
B, M, C = 5, 3, 6


def context(**extra):
    return {"index": None, "labels": RNG.integers(0, C, B), "training": False, "sample_weight": None, **extra}


def kd(part, logits, ctx):
    """The part's per-peer KD loss on backend tensors, as the distiller calls it."""
    tensor = keras.ops.convert_to_tensor
    logits = tensor(logits)
    ctx = {k: (v if v is None or isinstance(v, bool) else
               [tensor(f) for f in v] if isinstance(v, list) else tensor(v)) for k, v in ctx.items()}
    out = part.targets(logits, ctx)
    return to_numpy(losses.pairwise_kd(out["targets"], logits, part.temperature, out["pair_weights"])), out


def test_teacher_peers_matches_numpy():
    s, t = RNG.normal(size=(2, B, M, C)).astype("float32")
    part = knowledge.TeacherPeers(temperature=3.0)
    part.build_for_peers(M, C)
    got, _ = kd(part, s, context(teacher_logits=t))
    ps, pt = np_softmax(s.astype("float64"), 3.0), np_softmax(t.astype("float64"), 3.0)
    want = [9.0 / (M - 1) * sum(np.mean(np_kl(pt[:, j], ps[:, p])) for j in range(M) if j != p) for p in range(M)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("average", ["probabilities", "logits"])
def test_teacher_ensemble_matches_numpy(average):
    s, t = RNG.normal(size=(2, B, M, C)).astype("float32")
    part = knowledge.TeacherEnsemble(temperature=2.0, average=average)
    part.build_for_peers(M, C)
    got, _ = kd(part, s, context(teacher_logits=t))
    ps = np_softmax(s.astype("float64"), 2.0)
    want = []
    for p in range(M):
        others = [j for j in range(M) if j != p]
        if average == "logits":
            target = np_softmax(t[:, others].astype("float64").mean(1), 2.0)
        else:
            target = np_softmax(t[:, others].astype("float64"), 2.0).mean(1)
        want.append(4.0 * np.mean(np_kl(target, ps[:, p])))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_ensemble_teacher_mean_logits_and_min_logit_match_numpy():
    s = RNG.normal(size=(B, M, C)).astype("float32")
    labels = RNG.integers(0, C, B)
    ps = np_softmax(s.astype("float64"), 4.0)
    for mode in ("mean_logits", "min_logit"):
        part = knowledge.EnsembleTeacher(mode=mode, temperature=4.0)
        part.build_for_peers(M, C)
        got, _ = kd(part, s, {**context(), "labels": labels})
        if mode == "mean_logits":
            teacher = s.mean(1)
        else:
            teacher = np.array([[min(s[b, i, c] - s[b, i, labels[b]] for i in range(M)) for c in range(C)]
                                for b in range(B)])
            assert np.all(teacher[np.arange(B), labels] == 0)
        target = np_softmax(teacher.astype("float64"), 4.0)
        np.testing.assert_allclose(got, [16.0 * np.mean(np_kl(target, ps[:, i])) for i in range(M)], rtol=1e-5)


def _np_ce(logits, labels):
    p = np_softmax(logits.astype("float64"))
    return -np.mean(np.log(p[np.arange(len(labels)), labels]))


def test_peer_ensemble_head_matches_numpy():
    feats = [RNG.normal(size=(B, 4)).astype("float32") for _ in range(M)]
    s = RNG.normal(size=(B, M, C)).astype("float32")
    part = knowledge.PeerEnsemble(temperature=3.0)
    part.build_for_peers(M, C, {"features": [(None, 4)] * M, "shared_features": (None, 2)})
    kernel = RNG.normal(size=(4 * M, C)).astype("float32")
    bias = RNG.normal(size=(C,)).astype("float32")
    part.head.dense.kernel.assign(kernel)
    part.head.dense.bias.assign(bias)
    ctx = context(features=feats)
    got, out = kd(part, s, ctx)
    e = np.concatenate(feats, -1) @ kernel + bias
    pe, ps = np_softmax(e.astype("float64"), 3.0), np_softmax(s.astype("float64"), 3.0)
    np.testing.assert_allclose(got, [9.0 * np.mean(np_kl(pe, ps[:, i])) for i in range(M)], rtol=1e-4)
    np.testing.assert_allclose(float(to_numpy(out["losses"]["ce"])), _np_ce(e, ctx["labels"]), rtol=1e-5)


def test_gate_ensemble_matches_numpy():
    shared = RNG.normal(size=(B, 2)).astype("float32")
    s = RNG.normal(size=(B, M, C)).astype("float32")
    part = knowledge.GateEnsemble(temperature=3.0)
    part.build_for_peers(M, C, {"features": [(None, 4)] * M, "shared_features": (None, 2)})
    kernel = RNG.normal(size=(2, M)).astype("float32")
    part.head.dense.kernel.assign(kernel)
    ctx = context(shared_features=shared)  # inference: BN uses its initial moving stats (mean 0, variance 1)
    got, out = kd(part, s, ctx)
    g = np_softmax(np.maximum((shared @ kernel) / np.sqrt(1 + 1e-5), 0).astype("float64"))
    e = np.sum(g[:, :, None] * s, axis=1)
    pe, ps = np_softmax(e, 3.0), np_softmax(s.astype("float64"), 3.0)
    np.testing.assert_allclose(got, [9.0 * np.mean(np_kl(pe, ps[:, i])) for i in range(M)], rtol=1e-4)
    np.testing.assert_allclose(float(to_numpy(out["losses"]["ce"])), _np_ce(e, ctx["labels"]), rtol=1e-4)


def test_feature_parts_refuse_independent_students():
    with pytest.raises(ValueError, match="multi-branch"):
        knowledge.PeerEnsemble().build_for_peers(2, C)


def test_bad_arguments():
    with pytest.raises(ValueError, match="average"):
        knowledge.TeacherEnsemble(average="median")
    with pytest.raises(ValueError, match="mode"):
        knowledge.EnsembleTeacher(mode="max")


def test_dkel_ensemble_assembles_the_teacher_peers_logits_by_default():
    """DKEL Eq. 10 with t the logits (Sec. 3.1): target of peer p = softmax(mean_{j != p} t_j / tau)."""
    import keras_okd

    student = keras_okd.models.multi_branch("simple_cnn", M, num_classes=C, input_shape=(8, 8, 1), width=2)
    ek = {p.name: p for p in keras_okd.methods.dkel(student).knowledge}["ek"]
    assert ek.average == "logits" and knowledge.TeacherEnsemble().average == "logits"
    s, t = (RNG.normal(size=(2, B, M, C)) * 3).astype("float32")
    got, _ = kd(ek, s, context(teacher_logits=t))
    tau, ps = ek.temperature, np_softmax(s.astype("float64"), ek.temperature)
    logits_mean, probs_mean = [], []
    for p in range(M):
        others = [j for j in range(M) if j != p]
        logits_mean.append(tau**2 * np.mean(np_kl(np_softmax(t[:, others].astype("float64").mean(1), tau), ps[:, p])))
        probs_mean.append(tau**2 * np.mean(np_kl(np_softmax(t[:, others].astype("float64"), tau).mean(1), ps[:, p])))
    np.testing.assert_allclose(got, logits_mean, rtol=1e-5)
    assert np.abs(np.asarray(logits_mean) - np.asarray(probs_mean)).max() > 1e-3  # the two averages differ here
    old = {p.name: p for p in keras_okd.methods.dkel(student, ensemble_average="probabilities").knowledge}["ek"]
    np.testing.assert_allclose(kd(old, s, context(teacher_logits=t))[0], probs_mean, rtol=1e-5)
