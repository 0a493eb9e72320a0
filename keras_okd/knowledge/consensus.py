"""Collaborative learning's consensus of the other heads (Song and Chai, "Collaborative learning for deep neural
networks", NeurIPS 2018): head h learns from the soft target of the average of the OTHER heads' logits.

`leave_one_out_targets` is the shared function: for every peer p, `softmax(mean_{j != p} z_j / tau)` (or the mean of
the other peers' softened probabilities); DKEL's teacher ensemble applies it to the mean teacher's logits.
"""

import keras
from keras import ops

from keras_okd.knowledge.base import KnowledgePart, PartOutput
from keras_okd.losses import soften

AVERAGES = ("logits", "probabilities")


def leave_one_out_targets(logits, temperature, average="logits"):
    """Each peer's target from the other peers: `softmax(mean_{j != p} z_j / tau)` for every p.

    Args:
        logits: `(batch, peers, classes)`, M >= 2 peers.
        temperature: softening temperature tau.
        average: `"logits"` averages the other peers' logits, then softens; `"probabilities"` averages their
            softened probabilities `softmax(z_j / tau)`.

    Returns:
        Float32 `(batch, peers, classes)` probabilities; row p never depends on peer p.

    Example:

    >>> import numpy as np
    >>> z = np.array([[[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]]], "float32")
    >>> np.round(np.asarray(leave_one_out_targets(z, 1.0))[0, 0], 3).tolist()  # mean of peers 1, 2: [1, 1]
    [0.5, 0.5]
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}.")
    logits = ops.cast(logits, "float32")
    m = logits.shape[1]
    if average == "logits":
        others = (ops.sum(logits, axis=1, keepdims=True) - logits) / (m - 1)
        return soften(others, temperature)
    probs = soften(logits, temperature)
    return (ops.sum(probs, axis=1, keepdims=True) - probs) / (m - 1)


@keras.saving.register_keras_serializable(package="keras_okd")
class PeerConsensus(KnowledgePart):
    """Peer p learns from the consensus of the other peers (collaborative learning's soft target, Song and Chai,
    NeurIPS 2018):

        q_p = softmax(mean_{j != p} z_j / tau),    L^p = tau^2 KL(q_p || softmax(z_p / tau))

    The target is detached (no gradient reaches the other heads through it). With `average="probabilities"` the
    consensus is the mean of the other peers' softened probabilities instead.

    Args:
        weight: constant factor (CL: 1 - beta, with the cross-entropy weighted beta; see `keras_okd.methods.cl`).
        temperature: softening temperature.
        average: `"logits"` (CL's) or `"probabilities"`.
        name: part name (default `"cl"`).

    Example:

    >>> part = PeerConsensus(weight=0.5, temperature=2.0)
    >>> part.build_for_peers(num_peers=3, num_classes=10)
    """

    def __init__(self, weight=1.0, temperature=1.0, average="logits", name="cl", **kwargs):
        super().__init__(weight=weight, temperature=temperature, name=name, **kwargs)
        if average not in AVERAGES:
            raise ValueError(f"PeerConsensus: average must be one of {AVERAGES}, got {average!r}.")
        self.average = average

    def build(self, input_shape):
        super().build(input_shape)
        if self.num_peers < 2:
            raise ValueError(f"PeerConsensus needs at least 2 peers (each learns from the others), got "
                             f"{self.num_peers}.")

    def targets(self, peer_logits, context):
        return PartOutput(
            targets=leave_one_out_targets(peer_logits, self.temperature, self.average),
            pair_weights=ops.eye(self.num_peers, dtype="float32"),
        )

    def get_config(self):
        return {**super().get_config(), "average": self.average}
