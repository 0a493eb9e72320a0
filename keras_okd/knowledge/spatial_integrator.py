"""Spatial integrator (TSB, Eq. 7-8): the mean of all peers' softened predictions, one target for every peer."""

import keras
from keras import ops

from keras_okd.knowledge.base import KnowledgePart, PartOutput
from keras_okd.losses import soften


@keras.saving.register_keras_serializable(package="keras_okd")
class SpatialIntegrator(KnowledgePart):
    """Every peer learns from `p_si = mean_j softmax(z_j / tau)` over all peers, itself included.

    Loss of peer i: `weight * tau^2 * KL(p_si || p_i)`. This is also KDCL's "naive" ensemble target in
    probability space.

    Args:
        weight: constant factor (TSB's lambda_si = 0.5).
        temperature: softening temperature (TSB: 4).
        name: part name (default `"si"`).

    Example:

    >>> part = SpatialIntegrator(weight=0.5, temperature=4.0)
    >>> part.build_for_peers(num_peers=2, num_classes=10)
    """

    def __init__(self, weight=1.0, temperature=1.0, name="si", **kwargs):
        super().__init__(weight=weight, temperature=temperature, name=name, **kwargs)

    def targets(self, peer_logits, context):
        integrated = ops.mean(soften(peer_logits, self.temperature), axis=1, keepdims=True)
        return PartOutput(targets=integrated, pair_weights=ops.ones((self.num_peers, 1), dtype="float32"))
