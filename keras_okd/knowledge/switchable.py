"""Switchable online knowledge distillation (Biao Qian, Yang Wang, Hongzhi Yin, Richang Hong and Meng Wang,
"Switchable Online Knowledge Distillation", ECCV 2022; code: github.com/hfutqian/SwitOKD).

A teacher (the larger network) and a student train together as in DML, but the teacher is paused whenever the
distillation gap, `G = ||p_t^tau - p_s^tau||_1`, exceeds the adaptive switching threshold

    delta = ||y - p_s^tau||_1 - eps * ||y - p_t^tau||_1,
    eps = exp(-||y - p_t^tau||_1 / (||y - p_s^tau||_1 + ||y - p_t^tau||_1))

(y the one-hot label): in expert mode (`G > delta`) only the student learns, `CE_s + tau^2 KL(p_t || p_s)`; in
learning mode both learn, the teacher `CE_t + tau^2 KL(p_s || p_t)` as well. The formulas are those of the authors'
repository (its README states G and delta; its code computes them); the norms are batch means of per-sample L1
distances, and one mode holds for the whole batch, as in that code.

Where the authors' code departs from this description, and the choice made here:

- The code switches to expert mode only when, besides `G > delta`, the teacher is closer to the labels than the
  student (`||y - p_t||_1 < ||y - p_s||_1`): kept (`require_teacher_ahead=True`, the default); False switches on
  `G > delta` alone.
- The code's distances to the labels use the untempered softmax; with its temperature 1 this is the same thing. Here
  every distribution is softened by `temperature` (the README's `p^tau`).
- Pausing: the code skips the teacher's optimizer step. A Keras optimizer steps every weight of the distiller at
  once, so here the teacher's loss (CE and KD) is multiplied by 0 in expert mode: its gradient is zero, but SGD's
  momentum (and weight decay) still move it a little. With momentum 0 and no weight decay the pause is exact. Its
  batch-norm statistics move in both modes, as in the code (its teacher runs in training mode throughout).
- The code trains the teacher with lr 0.1 and the student with lr 0.01 (two optimizers); one optimizer here.
"""

import keras
import numpy as np
from keras import ops

from keras_okd.knowledge.base import KnowledgePart, PartOutput
from keras_okd.losses import soften


def l1_distance(p, q):
    """Batch mean of the per-sample L1 distance `sum_c |p_c - q_c|` of `(batch, classes)` distributions.

    Example:

    >>> import numpy as np, keras
    >>> float(keras.ops.convert_to_numpy(l1_distance(np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]))))
    1.0
    """
    return ops.mean(ops.sum(ops.abs(ops.cast(p, "float32") - ops.cast(q, "float32")), axis=-1))


def switching_threshold(labels_onehot, teacher_probs, student_probs):
    """SwitOKD's adaptive switching threshold `delta = ||y - p_s||_1 - eps ||y - p_t||_1`, with
    `eps = exp(-||y - p_t||_1 / (||y - p_s||_1 + ||y - p_t||_1))` (batch means of L1 distances).

    Args:
        labels_onehot: `(batch, classes)` one-hot labels y.
        teacher_probs: `(batch, classes)` p_t.
        student_probs: `(batch, classes)` p_s.

    Returns:
        A float32 scalar.

    Example:

    >>> import numpy as np, keras
    >>> y = np.array([[1.0, 0.0]])
    >>> round(float(keras.ops.convert_to_numpy(switching_threshold(y, y, np.array([[0.5, 0.5]])))), 4)  # 1 - e^0 * 0
    1.0
    """
    teacher_error = l1_distance(labels_onehot, teacher_probs)
    student_error = l1_distance(labels_onehot, student_probs)
    eps = ops.exp(-teacher_error / (student_error + teacher_error))
    return student_error - eps * teacher_error


def expert_mode(labels_onehot, teacher_probs, student_probs, require_teacher_ahead=True):
    """Whether this batch is in expert mode (the teacher paused): `G > delta`, and with `require_teacher_ahead` also
    `||y - p_t||_1 < ||y - p_s||_1` (the authors' code). A boolean scalar.

    Example:

    >>> import numpy as np, keras
    >>> y = np.array([[1.0, 0.0, 0.0]])
    >>> teacher, student = np.array([[0.8, 0.2, 0.0]]), np.array([[0.0, 0.0, 1.0]])   # G = 2.0, delta = 1.66
    >>> bool(keras.ops.convert_to_numpy(expert_mode(y, teacher, student)))
    True
    """
    gap = l1_distance(teacher_probs, student_probs)
    expert = gap > switching_threshold(labels_onehot, teacher_probs, student_probs)
    if require_teacher_ahead:
        expert = ops.logical_and(expert, l1_distance(labels_onehot, teacher_probs)
                                 < l1_distance(labels_onehot, student_probs))
    return expert


@keras.saving.register_keras_serializable(package="keras_okd")
class SwitchableDistillation(KnowledgePart):
    """SwitOKD's switch between learning mode and expert mode (see the module) for a teacher and a student.

    Targets are both peers' softened predictions; pair weights `W[student, teacher] = 1` always and
    `W[teacher, student] = 1` in learning mode, 0 in expert mode; `ce_scale` pauses the teacher's cross-entropy in
    expert mode. The mode is computed from this step's predictions (no gradient). The part counts training steps and
    expert-mode steps (`steps`, `expert_steps`, scalar variables written only in training and only when the step's
    loss is finite), so `expert_fraction()` tells how often the teacher was paused.

    Args:
        teacher: index of the teacher among the two peers (0).
        weight: factor of the KD terms (1, the code).
        temperature: tau (1, the code).
        require_teacher_ahead: also require the teacher to be closer to the labels than the student to pause it
            (the authors' code; True).
        name: part name (default `"switokd"`).

    Raises:
        ValueError: more or fewer than two peers (the paper's three-network topologies, 2T1S and 1T2S, are not
            implemented), or a teacher index that is not 0 or 1.

    Example:

    >>> part = SwitchableDistillation(teacher=0)
    >>> part.build_for_peers(num_peers=2, num_classes=10)
    >>> float(part.expert_fraction())
    0.0
    """

    def __init__(self, teacher=0, weight=1.0, temperature=1.0, require_teacher_ahead=True, name="switokd",
                 **kwargs):
        super().__init__(weight=weight, temperature=temperature, name=name, **kwargs)
        if isinstance(teacher, bool) or teacher not in (0, 1):
            raise ValueError(f"SwitchableDistillation: teacher must be the index of one of the two peers, 0 or 1; "
                             f"got {teacher!r}.")
        self.teacher = int(teacher)
        self.student = 1 - self.teacher
        self.require_teacher_ahead = bool(require_teacher_ahead)

    def build(self, input_shape):
        if int(input_shape[1]) != 2:
            raise ValueError(
                f"SwitchableDistillation trains one teacher and one student (2 peers), got {input_shape[1]} peers; "
                "the paper's three-network topologies (2T1S, 1T2S) are not implemented here."
            )
        super().build(input_shape)
        self.steps = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int32", name="steps")
        self.expert_steps = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int32",
                                            name="expert_steps")

    def mode(self, peer_logits, labels):
        """Expert mode (boolean scalar) of this batch."""
        probs = ops.stop_gradient(soften(peer_logits, self.temperature))
        onehot = ops.one_hot(ops.cast(labels, "int32"), self.num_classes, dtype="float32")
        return expert_mode(onehot, probs[:, self.teacher], probs[:, self.student], self.require_teacher_ahead)

    def targets(self, peer_logits, context):
        expert = self.mode(peer_logits, context["labels"])
        learning = 1.0 - ops.cast(expert, "float32")
        teacher, student = np.eye(2, dtype="float32")[self.teacher], np.eye(2, dtype="float32")[self.student]
        # W[i, j]: how much peer i learns from peer j; the teacher learns from the student in learning mode only
        pair_weights = ops.convert_to_tensor(np.outer(student, teacher)) + learning * ops.convert_to_tensor(
            np.outer(teacher, student))
        ce_scale = ops.convert_to_tensor(student) + learning * ops.convert_to_tensor(teacher)
        state = {"expert": expert} if context.get("training") else None
        return PartOutput(targets=soften(peer_logits, self.temperature), pair_weights=pair_weights, ce_scale=ce_scale,
                          state=state)

    def commit(self, state, finite):
        counted = ops.cast(finite, "int32")
        self.steps.assign(self.steps + counted)
        self.expert_steps.assign(self.expert_steps + counted * ops.cast(state["expert"], "int32"))

    def expert_fraction(self):
        """The fraction of (finite) training steps taken in expert mode, 0 before any."""
        steps = ops.cast(self.steps, "float32")
        return ops.where(steps > 0, ops.cast(self.expert_steps, "float32") / ops.maximum(steps, 1.0), 0.0)

    def get_config(self):
        return {**super().get_config(), "teacher": self.teacher,
                "require_teacher_ahead": self.require_teacher_ahead}
