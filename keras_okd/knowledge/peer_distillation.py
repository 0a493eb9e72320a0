"""Peer distillation (DML, Zhang et al., CVPR 2018): each peer learns from every other peer's softened prediction."""

import keras

from keras_okd.knowledge.base import KnowledgePart, PartOutput, other_peers
from keras_okd.losses import soften


@keras.saving.register_keras_serializable(package="keras_okd")
class PeerDistillation(KnowledgePart):
    """Peer i's targets are the other peers' predictions `softmax(z_j / tau)`, j != i.

    Loss of peer i: `weight * sum_{j != i} c * tau^2 * KL(p_j || p_i)` with `c = 1 / (M - 1)` for
    `reduction="mean"` (most reimplementations) or `c = 1` for `"sum"` (DML's official code).

    Args:
        weight: constant factor of the term.
        temperature: softening temperature (DML used 1; TSB 4).
        reduction: `"mean"` or `"sum"` over the other peers.
        name: part name (default `"dml"`).

    Example:

    >>> part = PeerDistillation(temperature=4.0)
    >>> part.build_for_peers(num_peers=3, num_classes=10)
    """

    def __init__(self, weight=1.0, temperature=1.0, reduction="mean", name="dml", **kwargs):
        super().__init__(weight=weight, temperature=temperature, name=name, **kwargs)
        other_peers(2, reduction)  # validates the name
        self.reduction = reduction

    def targets(self, peer_logits, context):
        return PartOutput(
            targets=soften(peer_logits, self.temperature),
            pair_weights=other_peers(self.num_peers, self.reduction),
        )

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}
