"""Relational KD (Park, Kim, Lu and Cho, "Relational Knowledge Distillation", CVPR 2019), made online.

Distance-wise potential (Eq. 4): `psi_D(t_i, t_j) = ||t_i - t_j||_2 / mu`, mu the mean distance over the batch's
distinct pairs (Eq. 5); loss (Eq. 6): Huber `l_delta` (delta = 1) between the student's and teacher's potentials.
Angle-wise potential (Eq. 7): `psi_A(t_i, t_j, t_k) = <e_ij, e_kj>`, `e_ij = (t_i - t_j) / ||t_i - t_j||_2`; loss
(Eq. 8): Huber between the potentials. `L_RKD = lambda_D L_D + lambda_A L_A` with lambda_D = 25, lambda_A = 50
(the paper's weights). The sums of Eqs. 6 and 8 are averaged, as the authors' code does (`smooth_l1_loss` with its
mean over all b^2 pairs and b^3 triplets, degenerate ones, which are zero on both sides, included).
"""

import keras
from keras import ops

from keras_okd.knowledge.features.base import FeatureDistillation, safe_l2_normalize


def _flat(x):
    x = ops.cast(x, "float32")
    return ops.reshape(x, (ops.shape(x)[0], -1))


def distance_potentials(features, epsilon=1e-12):
    """Eq. 4-5: `||x_i - x_j|| / mu`, `(b, ...) -> (b, b)`, zero diagonal, mu the mean of the positive distances."""
    x = _flat(features)
    squared_norms = ops.sum(ops.square(x), axis=1)
    squared = ops.expand_dims(squared_norms, 1) + ops.expand_dims(squared_norms, 0) - 2.0 * ops.matmul(x, ops.transpose(x))
    off_diagonal = 1.0 - ops.eye(ops.shape(x)[0], dtype="float32")
    distances = ops.sqrt(ops.maximum(squared, epsilon)) * off_diagonal
    positive = ops.cast(distances > 0, "float32")
    mu = ops.sum(distances) / ops.maximum(ops.sum(positive), 1.0)
    return distances / ops.where(mu > 0, mu, 1.0)  # a one-sample batch has no pairs: zeros, not 0 / 0


def angle_potentials(features):
    """Eq. 7: `<e_ij, e_kj>` for all i, j, k with `e_ij = normalize(x_i - x_j)`: `(b, ...) -> (b, b, b)` indexed
    `[j, i, k]` (zero where i = j or k = j). Holds b^3 values (and b^2 x features on the way); `angle_loss` computes
    the loss without them."""
    x = _flat(features)
    e = safe_l2_normalize(ops.expand_dims(x, 0) - ops.expand_dims(x, 1), axis=2)  # e[j, i] = normalize(x_i - x_j)
    return ops.matmul(e, ops.transpose(e, (0, 2, 1)))


def huber(a, b, delta=1.0):
    """Elementwise Huber (smooth L1) loss: `0.5 d^2 / delta` where |d| < delta, else `|d| - delta/2`."""
    d = ops.abs(a - b)
    return ops.where(d < delta, 0.5 * ops.square(d) / delta, d - 0.5 * delta)


def distance_loss(own_distances, target_distances):
    """Eq. 6 averaged over the b^2 pairs: the mean Huber loss between two peers' distance potentials."""
    return ops.mean(huber(own_distances, target_distances))


def angle_loss(own, target):
    """Eq. 8 averaged over the b^3 triplets: the mean Huber loss between the angle potentials of `own` and `target`
    features (`(b, ...)` each, any widths), one vertex j at a time (`keras.ops.map`), so that no more than b^2
    potentials and b x features differences are held at once: evaluation batches of 1,000 would otherwise need
    10^9 potentials and 10^6 x features differences."""
    own, target = _flat(own), _flat(target)

    def at_vertex(rows):
        own_j, target_j = rows
        e_own = safe_l2_normalize(own - own_j)  # e_own[i] = normalize(x_i - x_j)
        e_target = safe_l2_normalize(target - target_j)
        return ops.sum(huber(ops.matmul(e_own, ops.transpose(e_own)), ops.matmul(e_target, ops.transpose(e_target))))

    b = ops.cast(ops.shape(own)[0], "float32")
    return ops.sum(ops.map(at_vertex, (own, target))) / (b * b * b)


def rkd_loss(own, target, distance_weight=25.0, angle_weight=50.0):
    """`lambda_D * L_D + lambda_A * L_A` between two peers' features (a scalar; see `distance_loss`, `angle_loss`).

    Args:
        own: `{"distance": distance_potentials(x), "features": x}` of the learning peer (a term whose weight is 0
            may be absent).
        target: the same of the peer learnt from.
        distance_weight: lambda_D (paper: 25).
        angle_weight: lambda_A (paper: 50).
    """
    loss = 0.0
    if distance_weight:
        loss = loss + distance_weight * distance_loss(own["distance"], target["distance"])
    if angle_weight:
        loss = loss + angle_weight * angle_loss(own["features"], target["features"])
    return loss


@keras.saving.register_keras_serializable(package="keras_okd")
class RelationalKD(FeatureDistillation):
    """Online RKD: peer i matches the distance and angle structure of its batch embeddings to each other peer's.

    Any shapes pair (the potentials compare samples with each other, whatever the width), so heterogeneous peers work;
    image features are flattened per sample. Per-sample weights are refused. The angle term costs O(b^2 (b +
    features)) per pair and holds O(b (b + features)) values at a time (`angle_loss`).

    Args:
        layers: the embeddings compared (the paper and CRD's benchmark: the pooled features, `("pool",)`).
        weight: overall factor (CRD's benchmark: 1; the method's own weights are below).
        distance_weight: lambda_D (paper: 25).
        angle_weight: lambda_A (paper: 50).
        reduction: `"mean"` or `"sum"` over the other peers.
        name: part name (default `"rkd"`).

    Example:

    >>> part = RelationalKD(layers=("pool",))
    >>> part.build_for_peers(2, 100, {"peer_features": [{"pool": (None, 64)}, {"pool": (None, 128)}]})
    """

    label = "RKD"  # the method's name in TSB Table 4 and the report
    per_sample = False

    def __init__(self, layers=("pool",), weight=1.0, distance_weight=25.0, angle_weight=50.0, reduction="mean",
                 name="rkd", **kwargs):
        super().__init__(layers=layers, weight=weight, reduction=reduction, name=name, **kwargs)
        self.distance_weight = float(distance_weight)
        self.angle_weight = float(angle_weight)
        if self.distance_weight < 0 or self.angle_weight < 0 or not (self.distance_weight or self.angle_weight):
            raise ValueError(
                "RelationalKD: distance_weight and angle_weight must be >= 0 and not both 0, got "
                f"{distance_weight}, {angle_weight}."
            )

    def represent(self, peer, position, feature, context):
        potentials = {}
        if self.distance_weight:
            potentials["distance"] = distance_potentials(feature)
        if self.angle_weight:
            potentials["features"] = _flat(feature)
        return potentials

    def layer_loss(self, own, target, peer, other, position, context):
        return rkd_loss(own, target, self.distance_weight, self.angle_weight)

    def get_config(self):
        return {**super().get_config(), "distance_weight": self.distance_weight, "angle_weight": self.angle_weight}
