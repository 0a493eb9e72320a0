"""Neuron selectivity transfer (Huang and Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity
Transfer", 2017), made online.

Each channel k of a feature map is a sample `f^k` in R^(HW), its spatial activation pattern, L2-normalised. The loss
is the squared maximum mean discrepancy between the teacher's C_T and the student's C_S samples (Eq. 4):
`L_MMD^2 = 1/C_T^2 sum_{i,i'} k(f_T^i, f_T^i') + 1/C_S^2 sum_{j,j'} k(f_S^j, f_S^j')
- 2/(C_T C_S) sum_{i,j} k(f_S^j, f_T^i)`, with the polynomial kernel `k(x, y) = (x^T y + c)^d`, d = 2, c = 0
(the paper's best kernel), averaged over the batch. The teacher-teacher term carries no gradient but is kept, so the
logged value is the MMD itself (as the full loss of CRD's benchmark code).
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


def neuron_patterns(features):
    """Each channel's spatial pattern, L2-normalised over positions: `(b, H, W, C)`, float32."""
    features = ops.cast(features, "float32")
    shape = ops.shape(features)
    flat = ops.reshape(features, (shape[0], -1, shape[-1]))
    return ops.reshape(safe_l2_normalize(flat, axis=1), shape)


def polynomial_mmd(own_patterns, target_patterns, degree=2, offset=0.0):
    """Per-sample squared MMD (Eq. 4) between two sets of normalised channel patterns of the same spatial size.

    Args:
        own_patterns: `(b, H, W, C_S)` from `neuron_patterns`.
        target_patterns: `(b, H, W, C_T)`.
        degree: d of the polynomial kernel (paper: 2).
        offset: c of the polynomial kernel (paper: 0).

    Returns:
        `(b,)` float32.
    """
    b = ops.shape(own_patterns)[0]
    s = ops.reshape(own_patterns, (b, -1, own_patterns.shape[-1]))
    t = ops.reshape(target_patterns, (b, -1, target_patterns.shape[-1]))

    def kernel_mean(x, y):
        gram = ops.einsum("bpc,bpd->bcd", x, y) + offset
        return ops.mean(ops.square(gram) if degree == 2 else ops.power(gram, degree), axis=(1, 2))

    return kernel_mean(t, t) + kernel_mean(s, s) - 2.0 * kernel_mean(s, t)


@keras.saving.register_keras_serializable(package="keras_okd")
class NeuronSelectivityTransfer(FeatureDistillation):
    """Online NST: peer i matches the distribution of its neurons' spatial patterns to each other peer's (detached),
    summed over the layers.

    Channel counts may differ (MMD compares two sets of any sizes). Spatial sizes must match, or one must be an
    integer multiple of the other: then the larger map is average-pooled onto the smaller before the patterns are
    normalised (as CRD's benchmark code does); other sizes are refused when the part is built.

    Args:
        layers: the layers compared (the paper: the last group; CRD's benchmark: every stage output,
            `("stage_1", "stage_2", "stage_3")`).
        weight: lambda (CRD's benchmark: 50).
        degree: d of the polynomial kernel (paper: 2).
        offset: c of the polynomial kernel (paper: 0).
        reduction: `"mean"` or `"sum"` over the other peers.
        name: part name (default `"nst"`).

    Example:

    >>> part = NeuronSelectivityTransfer(layers=("stage_3",))
    >>> part.build_for_peers(2, 100, {"peer_features": [{"stage_3": (None, 8, 8, 64)}, {"stage_3": (None, 8, 8, 128)}]})
    """

    label = "NST"  # the method's name in TSB Table 4 and the report
    def __init__(self, layers=("stage_1", "stage_2", "stage_3"), weight=50.0, degree=2, offset=0.0,
                 reduction="mean", name="nst", **kwargs):
        super().__init__(layers=layers, weight=weight, reduction=reduction, name=name, **kwargs)
        if int(degree) != degree or degree < 1:
            raise ValueError(f"NeuronSelectivityTransfer: degree must be a positive integer, got {degree}.")
        self.degree = int(degree)
        self.offset = float(offset)

    @classmethod
    def default_layers(cls, stages, pool):
        return tuple(stages)  # every stage output

    def check_pair(self, own_shape, target_shape, what):
        check_pooling_pair(own_shape, target_shape, what, "NST")

    def represent(self, peer, position, feature, context):
        return neuron_patterns(feature)

    def layer_loss(self, own, target, peer, other, position, context):
        size = common_size(own.shape, target.shape, self.name)
        # Pooling normalised patterns and normalising again equals normalising the pooled map (each channel is only
        # scaled by a positive number), so the per-peer patterns are reused.
        if tuple(own.shape[1:3]) != size:
            own = neuron_patterns(average_pool_to(own, size))
        if tuple(target.shape[1:3]) != size:
            target = neuron_patterns(average_pool_to(target, size))
        return polynomial_mmd(own, target, self.degree, self.offset)

    def get_config(self):
        return {**super().get_config(), "degree": self.degree, "offset": self.offset}
