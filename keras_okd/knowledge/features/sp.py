"""Similarity-preserving KD (Tung and Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019), made online.

For a batch of b samples and a layer's activations `A` reshaped to `(b, c*h*w)`: `G = A A^T`, row-wise L2-normalised
(Eq. 2: `G~[i,:] = G[i,:] / ||G[i,:]||_2`), and Eq. (3): `L_SP = 1/b^2 * sum_(l,l') || G~_T^(l) - G~_S^(l') ||_F^2`
over the chosen pairs of layers.
"""

import keras
from keras import ops

from keras_okd.knowledge.features.base import FeatureDistillation, safe_l2_normalize


def similarity_matrix(features):
    """Eq. (2): the row-normalised batch similarity `G~ = rownorm(A A^T)`, `(b, ...) -> (b, b)` float32."""
    features = ops.cast(features, "float32")
    flat = ops.reshape(features, (ops.shape(features)[0], -1))
    return safe_l2_normalize(ops.matmul(flat, ops.transpose(flat)), axis=1)


def similarity_preserving_loss(own_similarity, target_similarity):
    """Eq. (3) for one pair of layers: `||G~_T - G~_S||_F^2 / b^2` (a scalar; b the batch size)."""
    batch = ops.cast(ops.shape(own_similarity)[0], "float32")
    return ops.sum(ops.square(target_similarity - own_similarity)) / (batch * batch)


@keras.saving.register_keras_serializable(package="keras_okd")
class SimilarityPreserving(FeatureDistillation):
    """Online SP: peer i matches its batch similarity matrices to each other peer's (detached).

    Any shapes pair (a similarity matrix is batch x batch whatever the layer), so heterogeneous peers work. The
    loss compares samples with each other, so per-sample weights are refused.

    Args:
        layers: the layers compared, matched by position (the paper and CRD's benchmark: the last stage,
            `("stage_3",)` for CIFAR ResNets).
        weight: gamma (paper on CIFAR-10, and CRD's benchmark: 3000).
        reduction: `"mean"` or `"sum"` over the other peers.
        name: part name (default `"sp"`).

    Example:

    >>> part = SimilarityPreserving(layers=("stage_3",), weight=3000.0)
    >>> part.build_for_peers(2, 100, {"peer_features": [{"stage_3": (None, 8, 8, 64)}, {"stage_3": (None, 8, 8, 128)}]})
    """

    label = "SP"  # the method's name in TSB Table 4 and the report
    per_sample = False

    def __init__(self, layers=("stage_3",), weight=3000.0, reduction="mean", name="sp", **kwargs):
        super().__init__(layers=layers, weight=weight, reduction=reduction, name=name, **kwargs)

    @classmethod
    def default_layers(cls, stages, pool):
        return tuple(stages[-1:])  # the last stage

    def represent(self, peer, position, feature, context):
        return similarity_matrix(feature)

    def layer_loss(self, own, target, peer, other, position, context):
        return similarity_preserving_loss(own, target)
