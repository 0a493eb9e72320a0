"""SwitOKD (Qian et al., ECCV 2022): the distillation gap, the adaptive switching threshold and the mode against float64
numpy; each peer's loss (CE scale and KD terms) and its gradient in both modes; in expert mode a training step leaves
the teacher's weights exactly where they were (momentum 0, no weight decay) while the student learns."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, gradient, tiny_student, to_numpy

import keras_okd
from keras_okd import knowledge
from keras_okd.knowledge import switchable

B, C = 6, 5
LABELS = np.array([0, 1, 2, 3, 4, 0], "int32")


def np_softmax(z, t=1.0):
    z = z / t
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_mode(teacher_logits, student_logits, t=1.0, require_teacher_ahead=True):
    """(expert, gap, delta) from SwitOKD's formulas, float64."""
    y = np.eye(C)[LABELS]
    pt, ps = np_softmax(teacher_logits, t), np_softmax(student_logits, t)
    gap = np.abs(pt - ps).sum(1).mean()
    et, es = np.abs(y - pt).sum(1).mean(), np.abs(y - ps).sum(1).mean()
    delta = es - np.exp(-et / (es + et)) * et
    expert = gap > delta and (et < es or not require_teacher_ahead)
    return expert, gap, delta


def np_loss(logits, teacher, t, weight, targets=None):
    """The distiller's SwitOKD loss: ce_scale_i CE_i + weight * KD terms, float64. The mode and the KD targets come
    from `targets` (default: `logits`), so a numerical gradient over `logits` with `targets` fixed is the gradient with
    detached targets."""
    targets = logits if targets is None else targets
    student = 1 - teacher
    expert = np_mode(targets[:, teacher], targets[:, student], t)[0]
    ce = [-np.log(np_softmax(logits[:, i])[np.arange(B), LABELS]).mean() for i in range(2)]

    def kd(target, learner):  # t^2 KL(softmax(target/t) || softmax(learner/t))
        p, q = np_softmax(targets[:, target], t), np_softmax(logits[:, learner], t)
        return t * t * (p * (np.log(p) - np.log(q))).sum(1).mean()

    terms = np.zeros(2)
    terms[student] = kd(teacher, student)
    terms[teacher] = 0.0 if expert else kd(student, teacher)
    scale = np.ones(2)
    scale[teacher] = 0.0 if expert else 1.0
    return (scale * ce).sum() + weight * terms.sum(), terms, scale


def logits_for(expert, seed):
    """Teacher and student logits (B, 2, C): a teacher confident on the labels and a student confident on other
    classes (expert mode), or two similar networks (learning mode)."""
    rng = np.random.default_rng(seed)
    if expert:
        teacher = 4.0 * np.eye(C)[LABELS] + 0.3 * rng.normal(size=(B, C))
        student = 4.0 * np.eye(C)[(LABELS + 1) % C] + 0.3 * rng.normal(size=(B, C))
    else:
        student = rng.normal(size=(B, C))
        teacher = student + 0.5 * rng.normal(size=(B, C))
    return np.stack([teacher, student], axis=1).astype("float32")


def test_gap_threshold_and_mode_match_numpy():
    y = np.eye(C)[LABELS].astype("float32")
    for seed in range(6):
        logits = logits_for(seed % 2 == 0, seed)
        pt, ps = np_softmax(logits[:, 0].astype("float64")), np_softmax(logits[:, 1].astype("float64"))
        want_expert, want_gap, want_delta = np_mode(logits[:, 0].astype("float64"), logits[:, 1].astype("float64"))
        assert want_expert == (seed % 2 == 0)  # the cases cover both modes
        np.testing.assert_allclose(to_numpy(switchable.l1_distance(pt, ps)), want_gap, rtol=1e-6)
        np.testing.assert_allclose(to_numpy(switchable.switching_threshold(y, pt, ps)), want_delta, rtol=1e-5)
        assert bool(to_numpy(switchable.expert_mode(y, pt, ps))) == want_expert
    # A large gap with the teacher behind the student: expert mode only without require_teacher_ahead.
    logits = logits_for(True, 9)[:, ::-1]
    pt, ps = np_softmax(logits[:, 0].astype("float64")), np_softmax(logits[:, 1].astype("float64"))
    assert not np_mode(logits[:, 0], logits[:, 1])[0] and np_mode(logits[:, 0], logits[:, 1],
                                                                  require_teacher_ahead=False)[0]
    assert not bool(to_numpy(switchable.expert_mode(y, pt, ps)))
    assert bool(to_numpy(switchable.expert_mode(y, pt, ps, require_teacher_ahead=False)))


def part_loss(part, logits):
    """The distiller's loss for this part: sum_i ce_scale_i CE_i + weight * sum_i term_i."""
    from keras_okd.losses import peer_cross_entropy

    out = part.targets(logits, {"labels": LABELS, "training": False, "index": None, "sample_weight": None})
    terms = part.peer_terms(out, logits)
    ce = peer_cross_entropy(LABELS, logits)
    return keras.ops.sum(ce * out["ce_scale"]) + part.weight * keras.ops.sum(terms), terms, out["ce_scale"]


@pytest.mark.parametrize("teacher", [0, 1])
@pytest.mark.parametrize("expert,t", [(True, 1.0), (False, 1.0), (False, 2.5)])
def test_loss_and_gradient_match_numpy_in_both_modes(expert, t, teacher):
    part = knowledge.SwitchableDistillation(teacher=teacher, temperature=t, weight=0.7)
    part.build_for_peers(2, C)
    logits = logits_for(expert, 3)
    if teacher == 1:
        logits = logits[:, ::-1].copy()
    total, terms, scale = part_loss(part, logits)
    want_total, want_terms, want_scale = np_loss(logits.astype("float64"), teacher, t, 0.7)
    assert want_scale[teacher] == (0.0 if expert else 1.0)  # the case is in the mode it names
    np.testing.assert_allclose(to_numpy(terms), want_terms, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(to_numpy(scale), want_scale)
    np.testing.assert_allclose(float(to_numpy(total)), want_total, rtol=1e-5)

    g = gradient(lambda z: part_loss(part, z)[0], logits)
    h, g_want = 1e-5, np.zeros(logits.shape)
    for position in np.ndindex(logits.shape):
        step = np.zeros(logits.shape)
        step[position] = h
        fixed = logits.astype("float64")
        g_want[position] = (np_loss(fixed + step, teacher, t, 0.7, fixed)[0]
                            - np_loss(fixed - step, teacher, t, 0.7, fixed)[0]) / (2 * h)
    np.testing.assert_allclose(g, g_want, rtol=1e-4, atol=1e-6)
    if expert:
        assert np.all(g[:, teacher] == 0.0)  # the paused teacher gets no gradient at all
    print(f"\n{BACKEND} switokd (expert={expert}, tau={t}, teacher={teacher}): value max abs "
          f"{np.abs(to_numpy(terms) - want_terms).max():.2e}; gradient max abs {np.abs(g - g_want).max():.2e}")


def test_expert_mode_step_leaves_the_teacher_and_counts_it():
    (x, y), _ = keras_okd.data.digits_arrays()
    x, y = x[:64], y[:64]

    def step(expert):
        keras.utils.set_random_seed(2)
        d = keras_okd.methods.switokd([tiny_student(name="teacher"), tiny_student(name="student")])
        part = d.knowledge[0]
        part.mode = lambda peer_logits, labels: keras.ops.convert_to_tensor(expert)
        d.compile(optimizer=keras.optimizers.SGD(0.1))
        before = [[to_numpy(v).copy() for v in s.trainable_variables] for s in d.students]
        d.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        moved = [any(not np.array_equal(a, to_numpy(v)) for a, v in zip(b, s.trainable_variables))
                 for b, s in zip(before, d.students)]
        return moved, int(to_numpy(part.steps)), int(to_numpy(part.expert_steps)), float(part.expert_fraction())

    assert step(True) == ([False, True], 2, 2, 1.0)
    assert step(False) == ([True, True], 2, 0, 0.0)


def test_refusals_and_config():
    with pytest.raises(ValueError, match="teacher must be the index of one of the two peers, 0 or 1; got 2"):
        knowledge.SwitchableDistillation(teacher=2)
    with pytest.raises(ValueError, match="one teacher and one student \\(2 peers\\), got 3 peers"):
        keras_okd.methods.switokd([tiny_student(name=f"s{i}") for i in range(3)])
    part = knowledge.SwitchableDistillation(teacher=1, temperature=3.0, require_teacher_ahead=False)
    again = knowledge.SwitchableDistillation.from_config(part.get_config())
    assert (again.teacher, again.student, again.temperature, again.require_teacher_ahead) == (1, 0, 3.0, False)


@pytest.mark.heavy
def test_switokd_trains_end_to_end():
    (x, y), _ = keras_okd.data.digits_arrays()
    d = keras_okd.methods.switokd([tiny_student(name="teacher", width=8), tiny_student(name="student")])
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    history = d.fit(x[:256], y[:256], batch_size=32, epochs=2, verbose=0, shuffle=False).history
    assert all(np.isfinite(history[f"student_{i}_switokd"][-1]) for i in range(2))
    part = d.knowledge[0]
    assert int(to_numpy(part.steps)) == 16
