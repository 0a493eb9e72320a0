"""OKDDip: Online Knowledge Distillation with Diverse Peers (Defang Chen, Jian-Ping Mei, Can Wang, Yan Feng and
Chun Chen, AAAI 2020).

Peers 0 .. M-2 are the auxiliary peers, peer M-1 the group leader (the network deployed). Two-level distillation:

1. Each auxiliary peer a learns from its own aggregation of the auxiliary peers' logits, with attention weights
   computed from the peers' pooled features by two linear projections shared by the peers (query L, key E):
   `alpha_ab = softmax_b(L(h_a) . E(h_b))`, `t_a = sum_b alpha_ab z_b` (b runs over every auxiliary peer, a
   included, as in the authors' code). Each peer thus gets its own target, which keeps the peers diverse.
2. The group leader learns from the auxiliary peers' ensemble, the mean of their logits.

Both levels are `tau^2 KL(softmax(t / tau) || softmax(z / tau))`, batch mean. `okddip_targets` and `okddip_losses`
are the pure functions; `DiversePeers` owns the projections and returns each peer's loss (`"peer_losses"`).
"""

import keras
from keras import ops

from keras_okd.knowledge.base import KnowledgePart, PartOutput
from keras_okd.losses import pairwise_kd, soften

TARGET_GRADIENTS = ("attention", "all", "none")


def okddip_targets(peer_logits, features, query_kernel, key_kernel, target_gradient="attention", include_self=True):
    """Target logits of OKDDip's two levels: `(batch, M, classes)`, row a < M-1 the attention aggregation of the
    auxiliary peers for peer a, row M-1 the mean of the auxiliary peers' logits (the leader's target).

    Args:
        peer_logits: `(batch, M, classes)`, M >= 3; the last peer is the group leader.
        features: `(batch, M, F)` pooled features of the peers (the leader's row is not used).
        query_kernel: `(F, d)` weights of the query projection L (no bias).
        key_kernel: `(F, d)` weights of the key projection E (no bias).
        target_gradient: what the gradient of a loss on these targets reaches: `"attention"`: the projections only
            (the peers' logits and features inside the targets are detached); `"all"`: the projections, features
            and logits too, as the authors' code (nothing is detached there); `"none"`: nothing.
        include_self: whether peer a's aggregation includes its own logits (the authors' code) or only the other
            auxiliary peers' (the abstract's "predictions of other auxiliary peers").

    Returns:
        `(target_logits (batch, M, classes), attention (batch, M - 1, M - 1))`, float32.

    Raises:
        ValueError: `target_gradient` is not one of `"attention"`, `"all"`, `"none"`.

    Example:

    >>> import numpy as np, keras
    >>> z = np.array([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]], "float32")   # 2 auxiliary peers, then the leader
    >>> h = np.ones((1, 3, 4), "float32"); w = np.ones((4, 2), "float32")  # equal features: equal attention
    >>> targets, attention = okddip_targets(z, h, w, w)
    >>> keras.ops.convert_to_numpy(targets)   # each auxiliary peer: the mean of both; the leader: their mean
    array([[[0.5, 0.5],
            [0.5, 0.5],
            [0.5, 0.5]]], dtype=float32)
    >>> targets, _ = okddip_targets(z, h, w, w, include_self=False)
    >>> keras.ops.convert_to_numpy(targets)[0, :2]   # each auxiliary peer: the other one's logits
    array([[0., 1.],
           [1., 0.]], dtype=float32)
    """
    if target_gradient not in TARGET_GRADIENTS:
        raise ValueError(f"target_gradient must be one of {TARGET_GRADIENTS}, got {target_gradient!r}.")
    logits = ops.cast(peer_logits, "float32")
    m = logits.shape[1] - 1
    aux_logits, aux_features = logits[:, :m], ops.cast(features, "float32")[:, :m]
    if target_gradient != "all":
        aux_logits, aux_features = ops.stop_gradient(aux_logits), ops.stop_gradient(aux_features)
    queries = ops.matmul(aux_features, ops.cast(query_kernel, "float32"))  # (B, m, d)
    keys = ops.matmul(aux_features, ops.cast(key_kernel, "float32"))
    energy = ops.einsum("bad,bfd->baf", queries, keys)  # (B, m, m)
    if not include_self:
        energy = energy - 1e9 * ops.eye(m, dtype="float32")
    attention = ops.softmax(energy, axis=-1)  # row a sums to 1
    if target_gradient == "none":
        attention = ops.stop_gradient(attention)
    aggregated = ops.einsum("baf,bfc->bac", attention, aux_logits)
    leader = ops.mean(aux_logits, axis=1, keepdims=True)
    return ops.concatenate([aggregated, leader], axis=1), attention


def okddip_losses(peer_logits, features, query_kernel, key_kernel, temperature, target_gradient="attention",
                  sample_weight=None, include_self=True):
    """Each peer's OKDDip distillation loss `(M,)`: `tau^2 KL(softmax(t_i / tau) || softmax(z_i / tau))`, batch
    mean, with `t` from `okddip_targets`; the gradient reaches the targets' inputs as `target_gradient` says.

    Example:

    >>> import numpy as np
    >>> z = np.zeros((2, 3, 4), "float32"); h = np.ones((2, 3, 8), "float32"); w = np.ones((8, 1), "float32")
    >>> np.asarray(okddip_losses(z, h, w, w, 3.0)).tolist()  # equal logits: every target equals its peer
    [0.0, 0.0, 0.0]
    """
    target_logits, _ = okddip_targets(peer_logits, features, query_kernel, key_kernel, target_gradient, include_self)
    m = peer_logits.shape[1]
    return pairwise_kd(soften(target_logits, temperature), peer_logits, temperature, ops.eye(m, dtype="float32"),
                       sample_weight, stop_target_gradient=target_gradient == "none")


@keras.saving.register_keras_serializable(package="keras_okd")
class DiversePeers(KnowledgePart):
    """OKDDip's two-level distillation on a multi-branch student with M >= 3 branches: branches 0 .. M-2 are the
    auxiliary peers, each distilled from its own attention-weighted aggregation of the auxiliary peers; branch M-1
    is the group leader, distilled from the auxiliary peers' mean logits (see the module docstring).

    The part owns the query and key projections (`F -> max(1, F // projection_factor)`, no bias, PyTorch's default
    `Linear` initialisation as in the authors' code), built from the branches' pooled feature width F; they are
    trained through the first-level loss (`target_gradient="attention"`, default: that is the only gradient the
    targets pass on, so no peer is pulled toward another peer's prediction; `"all"` reproduces the authors' code,
    whose targets are not detached at all; `"none"` freezes the projections at their initialisation). It returns
    each peer's loss as `"peer_losses"` (logged `student_{i}_{name}`, i = M-1 the leader).

    Args:
        weight: factor of both levels (OKDDip: 1, with the 80-epoch ramp-up).
        temperature: softening temperature (OKDDip: 3).
        projection_factor: F // projection_factor is the projections' width (the authors' code: 8).
        target_gradient: `"attention"`, `"all"` or `"none"` (see above and `okddip_targets`).
        include_self: include peer a's own logits in its aggregation (the authors' code); False: the other
            auxiliary peers only.
        name: part name (default `"okddip"`).
        feature_dim: F, the branches' pooled feature width; None: read from the branches when the distiller builds the
            part. A saved part's config holds it, so that `build` can create the projections before any features
            are seen (`keras.saving.load_model`).

    Example:

    ```python
    student = keras_okd.models.multi_branch("resnet32", num_branches=4, num_classes=100)  # 3 peers + leader
    distiller = keras_okd.OnlineDistiller(student, knowledge=[DiversePeers(temperature=3.0)])
    ```
    """

    needs_features = True

    def __init__(self, weight=1.0, temperature=1.0, projection_factor=8, target_gradient="attention", include_self=True,
                 name="okddip", feature_dim=None, **kwargs):
        super().__init__(weight=weight, temperature=temperature, name=name, **kwargs)
        if int(projection_factor) < 1:
            raise ValueError(f"DiversePeers: projection_factor must be >= 1, got {projection_factor}.")
        if target_gradient not in TARGET_GRADIENTS:
            raise ValueError(f"DiversePeers: target_gradient must be one of {TARGET_GRADIENTS}, got "
                             f"{target_gradient!r}.")
        self.projection_factor = int(projection_factor)
        self.target_gradient = target_gradient
        self.include_self = bool(include_self)
        self.feature_dim = None if feature_dim is None else int(feature_dim)

    def build_for_peers(self, num_peers, num_classes, feature_shapes=None):
        # The projections' width comes from the features, which `build` does not see: read it first.
        if feature_shapes is not None and feature_shapes.get("features"):
            widths = sorted({int(shape[-1]) for shape in feature_shapes["features"][:-1]})
            if len(widths) != 1:
                raise ValueError(f"DiversePeers: the auxiliary peers' pooled features must have one width, got "
                                 f"{widths}.")
            if self.feature_dim is not None and self.feature_dim != widths[0]:
                raise ValueError(f"DiversePeers {self.name!r} was built for features of width {self.feature_dim}, "
                                 f"not {widths[0]}.")
            self.feature_dim = widths[0]
        super().build_for_peers(num_peers, num_classes, feature_shapes)

    def build(self, input_shape):
        super().build(input_shape)
        if self.num_peers < 3:
            raise ValueError(
                f"DiversePeers (OKDDip) needs at least 3 peers: 2 or more auxiliary peers and the group leader (the "
                f"last branch); got {self.num_peers}. Build the student with num_branches >= 3."
            )
        if self.feature_dim is None:
            raise ValueError(f"DiversePeers {self.name!r} needs the branches' pooled features; it works on a "
                             "keras_okd.models.multi_branch student.")
        width = max(1, self.feature_dim // self.projection_factor)
        init = keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")
        self.query_kernel = self.add_weight(shape=(self.feature_dim, width), initializer=init, name="query_kernel")
        self.key_kernel = self.add_weight(shape=(self.feature_dim, width), initializer=init, name="key_kernel")

    def targets(self, peer_logits, context):
        features = ops.stack([ops.cast(f, "float32") for f in context["features"]], axis=1)
        losses = okddip_losses(peer_logits, features, self.query_kernel, self.key_kernel, self.temperature,
                               self.target_gradient, context["sample_weight"], self.include_self)
        return PartOutput(peer_losses=losses)

    def get_config(self):
        return {**super().get_config(), "projection_factor": self.projection_factor,
                "target_gradient": self.target_gradient, "include_self": self.include_self,
                "feature_dim": self.feature_dim}
