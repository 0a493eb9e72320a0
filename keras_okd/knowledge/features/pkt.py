"""Probabilistic knowledge transfer (Passalis and Tefas, "Learning Deep Representations with Probabilistic Knowledge
Transfer", ECCV 2018), made online.

With the cosine-similarity kernel `K(a, b) = (a^T b / (||a|| ||b||) + 1) / 2` (Eq. 8), each sample's conditional
probabilities over the other samples of the batch (Eq. 6-7): `p_{j|i} = K(x_i, x_j) / sum_{k != i} K(x_i, x_k)`,
j != i, for the student and the teacher; the loss (Eq. 9) is the KL divergence
`sum_i sum_{j != i} p^t_{j|i} log(p^t_{j|i} / p^s_{j|i})`, here averaged over the b(b - 1) pairs. The authors' code
also keeps the i = j terms (and averages over b^2 entries) and adds 1e-7 inside the logarithm; the paper's
exclusion of j = i is followed, and the 1e-7 kept (it is what makes the logarithm safe where a kernel value is 0).
"""

import keras
from keras import ops

from keras_okd.knowledge.features.base import FeatureDistillation

EPSILON = 1e-7


def conditional_probabilities(features, epsilon=EPSILON):
    """Eq. 6-8: `p_{j|i}` from the cosine kernel, `(b, ...) -> (b, b)` (row i, column j; zero diagonal).

    Rows are normalised as `x / (||x|| + epsilon)` (the authors' code).
    """
    x = ops.cast(features, "float32")
    x = ops.reshape(x, (ops.shape(x)[0], -1))
    norms = ops.sqrt(ops.sum(ops.square(x), axis=1, keepdims=True))
    x = x / (norms + epsilon)
    kernel = (ops.matmul(x, ops.transpose(x)) + 1.0) / 2.0
    kernel = kernel * (1.0 - ops.eye(ops.shape(x)[0], dtype="float32"))
    # A one-sample batch has no other samples: its row stays zero instead of 0 / 0.
    return kernel / ops.maximum(ops.sum(kernel, axis=1, keepdims=True), 1e-30)


def pkt_loss(own_probabilities, target_probabilities, epsilon=EPSILON):
    """Eq. 9, averaged over the b(b - 1) pairs: `mean_{i != j} p^t log((p^t + eps) / (p^s + eps))` (a scalar)."""
    b = ops.shape(own_probabilities)[0]
    mask = 1.0 - ops.eye(b, dtype="float32")
    terms = target_probabilities * ops.log((target_probabilities + epsilon) / (own_probabilities + epsilon))
    pairs = ops.cast(b, "float32") * (ops.cast(b, "float32") - 1.0)
    return ops.sum(terms * mask) / ops.maximum(pairs, 1.0)


@keras.saving.register_keras_serializable(package="keras_okd")
class ProbabilisticKT(FeatureDistillation):
    """Online PKT: peer i matches its samples' similarity distributions to each other peer's (detached).

    Any shapes pair (the distributions are over the batch), so heterogeneous peers work. Per-sample weights are
    refused (the loss compares samples with each other). With fewer than 3 samples in a batch every distribution is
    certain and the loss is 0.

    Args:
        layers: the representation compared (CRD's benchmark: the pooled features, `("pool",)`).
        weight: the loss weight (CRD's benchmark: 30000).
        reduction: `"mean"` or `"sum"` over the other peers.
        name: part name (default `"pkt"`).

    Example:

    >>> part = ProbabilisticKT(layers=("pool",), weight=30000.0)
    >>> part.build_for_peers(2, 100, {"peer_features": [{"pool": (None, 64)}, {"pool": (None, 128)}]})
    """

    label = "PKT"  # the method's name in TSB Table 4 and the report
    per_sample = False

    def __init__(self, layers=("pool",), weight=30000.0, reduction="mean", name="pkt", **kwargs):
        super().__init__(layers=layers, weight=weight, reduction=reduction, name=name, **kwargs)

    def represent(self, peer, position, feature, context):
        return conditional_probabilities(feature)

    def layer_loss(self, own, target, peer, other, position, context):
        return pkt_loss(own, target)
