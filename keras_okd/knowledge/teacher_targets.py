"""Knowledge from the mean teacher (PCL's L_pm, DKEL's decoupled knowledge L_dk and ensemble knowledge L_ek).

The teacher itself, an EMA copy of the student network(s), is owned and updated by the `OnlineDistiller`
(`teacher_eta=...`); these parts turn its logits on this step's views into targets.
"""

import keras
from keras import ops

from keras_okd.knowledge.base import KnowledgePart, PartOutput, other_peers
from keras_okd.knowledge.consensus import AVERAGES, leave_one_out_targets
from keras_okd.losses import soften


@keras.saving.register_keras_serializable(package="keras_okd")
class TeacherPeers(KnowledgePart):
    """Peer p learns from the teacher's other peers j != p, averaged (PCL Eq. 4; DKEL Eq. 6):

        L^p = 1 / (M - 1) * sum_{j != p} tau^2 KL(softmax(t_j / tau) || softmax(s_p / tau))

    Args:
        weight: constant factor.
        temperature: softening temperature.
        name: part name (PCL: `"pm"`, DKEL: `"dk"`).

    Example:

    >>> part = TeacherPeers(temperature=3.0, name="dk")
    >>> part.build_for_peers(num_peers=3, num_classes=10)
    """

    needs_teacher = True

    def __init__(self, weight=1.0, temperature=1.0, name="teacher_peers", **kwargs):
        super().__init__(weight=weight, temperature=temperature, name=name, **kwargs)

    def targets(self, peer_logits, context):
        return PartOutput(
            targets=soften(context["teacher_logits"], self.temperature),
            pair_weights=other_peers(self.num_peers, "mean"),
        )


@keras.saving.register_keras_serializable(package="keras_okd")
class TeacherEnsemble(KnowledgePart):
    """Peer p learns from the ensemble of the teacher's other peers (DKEL Eq. 9-10):

        t_bar^p = mean_{j != p} t_j,    L^p = tau^2 KL(softmax-target(t_bar^p) || softmax(s_p / tau))

    With `average="logits"` (default) the ensemble averages the other teacher peers' logits, then softens them:
    target = softmax(mean_{j != p} t_j / tau). This is the paper's definition (Eq. 10 averages t, which Sec. 3.1
    defines as logits; "the logits of teacher peers are assembled") and what DKEL's public code does.
    `average="probabilities"` averages the peers' softened probabilities instead, mean_{j != p} softmax(t_j / tau).
    DKEL weighs this term by omega(e) = exp(-gamma e) and the decoupled term by 1 - omega(e): see
    `keras_okd.knowledge.Decay`.

    Args:
        weight: constant factor.
        temperature: softening temperature.
        average: `"logits"` (the paper's) or `"probabilities"`.
        name: part name (DKEL: `"ek"`).

    Example:

    >>> part = TeacherEnsemble(temperature=3.0, name="ek")
    >>> part.build_for_peers(num_peers=3, num_classes=10)
    """

    needs_teacher = True

    def __init__(self, weight=1.0, temperature=1.0, average="logits", name="teacher_ensemble", **kwargs):
        super().__init__(weight=weight, temperature=temperature, name=name, **kwargs)
        if average not in AVERAGES:
            raise ValueError(f"TeacherEnsemble: average must be 'logits' or 'probabilities', got {average!r}.")
        self.average = average

    def build(self, input_shape):
        super().build(input_shape)
        if self.num_peers < 2:
            raise ValueError("TeacherEnsemble needs at least 2 peers (each learns from the others).")

    def targets(self, peer_logits, context):
        return PartOutput(
            targets=leave_one_out_targets(context["teacher_logits"], self.temperature, self.average),
            pair_weights=ops.eye(self.num_peers, dtype="float32"),
        )

    def get_config(self):
        return {**super().get_config(), "average": self.average}
