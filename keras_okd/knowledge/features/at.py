"""Attention transfer (Zagoruyko and Komodakis, "Paying More Attention to Attention", ICLR 2017), made online.

Activation-based spatial attention of a feature map `A` (C channels): `F(A) = mean_c |A_c|^p` (the paper's
`F^p_sum`, divided by C, which the normalisation cancels), p = 2. Eq. (2) of the paper:
`L_AT = beta / 2 * sum_j || Q_S^j / ||Q_S^j||_2 - Q_T^j / ||Q_T^j||_2 ||_p`, Q = vec(F(A)), over the chosen layers j,
with beta = 10^3 divided by the attention map's element count and the batch size. The authors' code
(szagoruyko/attention-transfer, and CRD's benchmark after it) computes `beta * mean((Q_S/||Q_S|| - Q_T/||Q_T||)^2)`,
the squared difference averaged over positions and batch, with beta = 1000: that is what is implemented here (the
paper's beta normalisation, the code's square and its beta without the 1/2).
"""

import keras
from keras import ops

from keras_okd.knowledge.features.base import (
    FeatureDistillation,
    average_pool_to,
    check_pooling_pair,
    common_size,
    safe_l2_normalize,
)


def attention_map(features, p=2):
    """`mean_c |A_c|^p`: `(batch, H, W, C) -> (batch, H, W)`, float32, not normalised."""
    features = ops.cast(features, "float32")
    powered = ops.square(features) if p == 2 else ops.power(ops.abs(features), p)
    return ops.mean(powered, axis=-1)


def attention_transfer_loss(own_map, target_map):
    """Per-sample AT loss between two attention maps of the same size: the mean over positions of
    `(Q_own / ||Q_own||_2 - Q_target / ||Q_target||_2)^2`, Q the flattened map.

    Args:
        own_map: `(batch, H, W)` from `attention_map`.
        target_map: `(batch, H, W)`.

    Returns:
        `(batch,)` float32.
    """
    batch = ops.shape(own_map)[0]
    q_own = safe_l2_normalize(ops.reshape(own_map, (batch, -1)))
    q_target = safe_l2_normalize(ops.reshape(target_map, (batch, -1)))
    return ops.mean(ops.square(q_own - q_target), axis=-1)


@keras.saving.register_keras_serializable(package="keras_okd")
class AttentionTransfer(FeatureDistillation):
    """Online attention transfer: peer i matches its attention maps to each other peer's (detached), summed over the
    layers (AT sums over its chosen group outputs), averaged over the other peers.

    Channels may differ between peers (an attention map has none). Spatial sizes must match, or one must be an
    integer multiple of the other: then the larger (unnormalised) attention map is average-pooled onto the smaller
    before normalising (the paper pairs layers of equal size; CRD's code average-pools the larger feature map
    instead, which changes the map, not the idea). Other sizes are refused when the part is built.

    Args:
        layers: the layers whose attention is transferred (AT on ResNets: the group outputs; zoo:
            `("stage_1", "stage_2", "stage_3")`).
        weight: beta (paper and code: 1000).
        p: the power of the attention map (paper: 2).
        reduction: `"mean"` or `"sum"` over the other peers.
        name: part name (default `"at"`).

    Example:

    >>> part = AttentionTransfer(layers=("stage_1", "stage_2", "stage_3"))
    >>> shapes = {"stage_1": (None, 32, 32, 16), "stage_2": (None, 16, 16, 32), "stage_3": (None, 8, 8, 64)}
    >>> part.build_for_peers(2, 100, {"peer_features": [shapes, shapes]})
    """

    label = "AT"  # the method's name in TSB Table 4 and the report
    def __init__(self, layers=("stage_1", "stage_2", "stage_3"), weight=1000.0, p=2, reduction="mean", name="at",
                 **kwargs):
        super().__init__(layers=layers, weight=weight, reduction=reduction, name=name, **kwargs)
        if not float(p) > 0:
            raise ValueError(f"AttentionTransfer: p must be > 0, got {p}.")
        self.p = float(p)

    @classmethod
    def default_layers(cls, stages, pool):
        return tuple(stages)  # every stage output (AT's group outputs)

    def check_pair(self, own_shape, target_shape, what):
        check_pooling_pair(own_shape, target_shape, what, "attention transfer")

    def represent(self, peer, position, feature, context):
        return attention_map(feature, self.p)

    def layer_loss(self, own, target, peer, other, position, context):
        size = common_size(own.shape, target.shape, self.name)
        return attention_transfer_loss(average_pool_to(own, size), average_pool_to(target, size))

    def get_config(self):
        return {**super().get_config(), "p": self.p}
