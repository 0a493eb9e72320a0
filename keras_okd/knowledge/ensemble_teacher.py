"""KDCL's ensemble teachers (Guo et al., CVPR 2020): one soft target built from all students' logits."""

import keras
from keras import ops

from keras_okd.knowledge.base import KnowledgePart, PartOutput
from keras_okd.losses import soften


def min_logit(peer_logits, labels):
    """KDCL-MinLogit: per class c, the minimum over students of `z_c - z_y` (y the true class).

    Args:
        peer_logits: `(batch, peers, classes)`.
        labels: integer `(batch,)`.

    Returns:
        `(batch, classes)` teacher logits; the true class gets 0, the others their least confusing margin.

    Example:

    >>> import numpy as np, keras
    >>> logits = np.array([[[2.0, 1.0, 0.0], [3.0, 0.0, 2.0]]], "float32")   # 1 sample, 2 students, 3 classes
    >>> keras.ops.convert_to_numpy(min_logit(logits, np.array([0])))       # margins [0, -1, -2] and [0, -3, -1]
    array([[ 0., -3., -2.]], dtype=float32)
    """
    peer_logits = ops.convert_to_tensor(peer_logits)
    true = ops.take_along_axis(peer_logits, ops.reshape(ops.cast(labels, "int32"), (-1, 1, 1)), axis=2)
    return ops.min(peer_logits - true, axis=1)


@keras.saving.register_keras_serializable(package="keras_okd")
class EnsembleTeacher(KnowledgePart):
    """Every student learns from one teacher built from all students' logits.

    Modes: `"mean_logits"`, the mean of the students' logits (KDCL's public code); `"min_logit"`, KDCL-MinLogit
    (per class, the minimum over students of z_c - z_y). The target is softmax(teacher / tau), detached.

    Args:
        mode: `"mean_logits"` or `"min_logit"`.
        weight: factor of the KD term (KDCL: 0.5, with cross-entropy weighted 0.5 too).
        temperature: softening temperature (KDCL: 4).
        name: part name (default `"kdcl"`).

    Example:

    >>> part = EnsembleTeacher(mode="min_logit", temperature=4.0)
    >>> part.build_for_peers(num_peers=2, num_classes=10)
    """

    MODES = ("mean_logits", "min_logit")

    def __init__(self, mode="mean_logits", weight=1.0, temperature=1.0, name="kdcl", **kwargs):
        super().__init__(weight=weight, temperature=temperature, name=name, **kwargs)
        if mode not in self.MODES:
            raise ValueError(f"EnsembleTeacher: mode must be one of {self.MODES}, got {mode!r}.")
        self.mode = mode

    def targets(self, peer_logits, context):
        if self.mode == "mean_logits":
            teacher = ops.mean(peer_logits, axis=1)
        else:
            teacher = min_logit(peer_logits, context["labels"])
        return PartOutput(
            targets=ops.expand_dims(soften(teacher, self.temperature), 1),
            pair_weights=ops.ones((self.num_peers, 1), dtype="float32"),
        )

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
