"""What every feature-distillation part shares: which layers it reads, and "peer i learns from every other peer j".

The online versions of the classic feature-KD methods (TSB Table 4: "modified from their classic KD versions ...
built upon the scheme of DML") replace the fixed teacher by the other peers: peer i's loss is the classic
student-teacher loss with i as the student and each other peer j as the teacher, averaged over j != i (DML's default;
`reduction="sum"` sums), the teacher side detached. A part declares the layers it reads with `layers=`, receives
their shapes at build time (`build_heads`) and their values at step time (`context["peer_features"]`), and returns
a `PartOutput` of `peer_losses` `(M,)`; the distiller adds `weight * schedule * sum_i peer_losses[i]` and logs
`student_{i}_{name}`.

Image features are channels-last, `(batch, height, width, channels)`; pooled features `(batch, features)`.
"""

import keras
from keras import ops

from keras_okd.knowledge.base import KnowledgePart, PartOutput, other_peers
from keras_okd.losses import _batch_mean


def safe_l2_normalize(x, axis=-1, epsilon=1e-12):
    """`x / max(||x||, epsilon)` along `axis` (torch's `F.normalize`), with a finite gradient at `x = 0`."""
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared, epsilon * epsilon))


def average_pool_to(x, size):
    """Average-pool a `(batch, H, W, ...)` map to `size = (h, w)`, `H, W` integer multiples of `h, w`."""
    height, width = int(x.shape[1]), int(x.shape[2])
    h, w = size
    if (height, width) == (h, w):
        return x
    shape = ops.shape(x)
    x = ops.reshape(x, (shape[0], h, height // h, w, width // w) + tuple(shape[3:]))
    return ops.mean(x, axis=(2, 4))


def common_size(shape_a, shape_b, what):
    """The smaller spatial size `(h, w)` of two feature maps when the larger is an integer multiple of it (then
    average pooling maps one onto the other); otherwise a `ValueError` naming `what`."""
    (ha, wa), (hb, wb) = tuple(shape_a[1:3]), tuple(shape_b[1:3])
    if ha >= hb and wa >= wb and ha % hb == 0 and wa % wb == 0:
        return hb, wb
    if hb >= ha and wb >= wa and hb % ha == 0 and wb % wa == 0:
        return ha, wa
    raise ValueError(
        f"{what}: spatial sizes {ha}x{wa} and {hb}x{wb} differ and neither is an integer multiple of the other, so "
        "the larger cannot be average-pooled onto the smaller. Pick layers of matching resolution (the zoo's "
        "stage_k of the same k have the same size for the same input)."
    )


def check_pooling_pair(own_shape, target_shape, what, method):
    """Refuse anything but two image features whose spatial sizes pool onto each other (AT, NST)."""
    check_rank(own_shape, (4,), what, method)
    check_rank(target_shape, (4,), what, method)
    common_size(own_shape, target_shape, what)


def check_rank(shape, ranks, what, method):
    """Refuse a feature whose rank is not in `ranks`, and image features under a channels-first configuration."""
    if len(shape) not in ranks:
        kinds = {2: "pooled (batch, features)", 4: "image (batch, height, width, channels)"}
        raise ValueError(
            f"{what}: {method} reads {' or '.join(kinds[r] for r in ranks)} features, got shape {shape}."
        )
    if len(shape) == 4 and keras.config.image_data_format() != "channels_last":
        raise ValueError(
            f"{what}: {method} reads image features channels-last (batch, height, width, channels), but Keras is "
            "configured channels-first; build the students with keras.config.set_image_data_format('channels_last')."
        )


class Connectors(keras.layers.Layer):
    """The trainable connectors or heads of a feature part (FitNet regressors, CRD embeddings), a tracked list.

    The part creates this container in its `build` (before Keras locks the part's state) and fills it in
    `build_heads`, once the peers' feature shapes are known.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.items = []

    def set(self, layers):
        self.items = list(layers)
        self.built = True

    def __getitem__(self, position):
        return self.items[position]

    def __len__(self):
        return len(self.items)


class FeatureDistillation(KnowledgePart):
    """Base of the feature-distillation parts (a mixin of layer handling and pairwise aggregation).

    Subclasses implement `layer_loss` (and, when a per-peer quantity can be computed once and reused for every
    pair, `represent`), optionally `check_pair` (refuse incompatible shapes at build time) and `build_connectors`
    (trainable connectors/heads, owned by the part: trained and saved with the distiller, never part of an
    exported student).

    Peer i's loss is `c * sum_{j != i} sum_k layer_loss(represent(f_i^k), stop_gradient(represent(f_j^k)))`, k over
    the named layers matched by position, `c = 1 / (M - 1)` for `reduction="mean"`, 1 for `"sum"`.

    Args:
        layers: the layer names read, matched by position across peers: one name, a sequence of names used for
            every peer (`("stage_1", "stage_2", "stage_3")` for zoo models), or one sequence per peer (models with
            different layer names). A name may contain `{peer}`, replaced by the peer index (a multi-branch
            student's `"branch_{peer}/b{peer}_stage_3"`; a path `"sub_model/layer"` reads a nested model).
        weight: the method's loss weight (its paper's beta / lambda).
        reduction: `"mean"` (average over the other peers, DML's default) or `"sum"`.
        name: the part's name (logs `student_{i}_{name}`).

    Attributes:
        feature_layers: the normalised `layers`.
        per_sample: whether the loss is a mean over samples (then `sample_weight` weighs it); relational losses
            compare samples with each other and refuse sample weights.
        label: the method's short name in the papers' tables ("AT", "CRD", ...).

    Raises:
        ValueError: no `layers`, more layers per peer than the method reads (`max_layers`), or an unknown
            `reduction`.

    Example:

    A new method is a subclass with its `layer_loss` (here the mean squared distance of equal-shape features):

    >>> import keras, numpy as np
    >>> class FeatureMSE(FeatureDistillation):
    ...     def check_pair(self, own_shape, target_shape, what):
    ...         if own_shape != target_shape:
    ...             raise ValueError(f"{what}: shapes differ, {own_shape} and {target_shape}.")
    ...     def layer_loss(self, own, target, peer, other, position, context):
    ...         return keras.ops.mean(keras.ops.square(own - target), axis=-1)   # (batch,)
    >>> part = FeatureMSE(layers=("pool",), name="feature_mse")
    >>> part.build_for_peers(2, 10, {"peer_features": [{"pool": (None, 4)}, {"pool": (None, 4)}]})
    >>> features = [{"pool": np.zeros((2, 4), "float32")}, {"pool": np.full((2, 4), 2.0, "float32")}]
    >>> losses = part.targets(np.zeros((2, 2, 10), "float32"), {"peer_features": features})["peer_losses"]
    >>> keras.ops.convert_to_numpy(losses)
    array([4., 4.], dtype=float32)

    In a distiller, register it with `keras.saving.register_keras_serializable` (so saved models restore it) and
    pass it as knowledge: `keras_okd.methods.dml(students, features=FeatureMSE(layers=("pool",)))`.
    """

    per_sample = True
    max_layers = None
    label = None

    def __init__(self, layers, weight=1.0, reduction="mean", name=None, **kwargs):
        super().__init__(weight=weight, layers=layers, name=name, **kwargs)
        if not self.feature_layers:
            raise ValueError(f"{type(self).__name__}: name the layers it reads, e.g. layers=('stage_3',).")
        other_peers(2, reduction)  # validates the name
        self.reduction = reduction
        self.peer_feature_shapes = None
        per_peer = self.feature_layers if isinstance(self.feature_layers, list) else [self.feature_layers]
        if self.max_layers is not None and max(len(n) for n in per_peer) > self.max_layers:
            raise ValueError(
                f"{type(self).__name__}: reads {self.max_layers} layer(s) per peer, got {self.feature_layers!r}."
            )

    def build(self, input_shape):
        super().build(input_shape)
        self.connectors = Connectors(name=f"{self.name}_connectors")

    @classmethod
    def default_layers(cls, stages, pool):
        """The layers this method reads on a network whose stage outputs are `stages` (in order) and whose pooled
        features are `pool`, by CRD's benchmark code's rule (the default: the pooled features). Presets use it to
        fit the defaults to the students' zoo names (`keras_okd.models.feature_layers`)."""
        return (pool,)

    # -- build ------------------------------------------------------------------------------------------------------

    def build_heads(self, feature_shapes):
        """Check the peers' feature shapes, then build the part's connectors (`build_connectors`)."""
        peer_shapes = (feature_shapes or {}).get("peer_features")
        if peer_shapes is None:
            raise ValueError(
                f"Knowledge part {self.name!r} ({type(self).__name__}) reads the peers' intermediate features "
                f"{self.feature_layers!r}, but no feature shapes were given: build it with "
                "build_for_peers(num_peers, num_classes, {'peer_features': [{name: shape}, ...]}) (the distiller "
                "does this for parts that declare `feature_layers`)."
            )
        if len(peer_shapes) != self.num_peers:
            raise ValueError(
                f"Knowledge part {self.name!r}: got feature shapes of {len(peer_shapes)} peers for {self.num_peers}."
            )
        shapes = []
        for i in range(self.num_peers):
            names = self.layers_for_peer(i)
            missing = [n for n in names if n not in peer_shapes[i]]
            if missing:
                raise ValueError(
                    f"Knowledge part {self.name!r}: peer {i} has no feature layer named {missing}; it offers "
                    f"{sorted(peer_shapes[i])}. For zoo models see keras_okd.models.feature_layers(model); for other "
                    "functional models, model.summary() lists the layer names."
                )
            shapes.append([tuple(peer_shapes[i][n]) for n in names])
        if len({len(s) for s in shapes}) != 1:
            raise ValueError(
                f"Knowledge part {self.name!r}: the peers name different numbers of layers "
                f"({[len(s) for s in shapes]}); layers are matched by position, so each peer needs the same count."
            )
        for i in range(self.num_peers):
            for j in range(self.num_peers):
                for k in range(len(shapes[i])):
                    if i != j:
                        self.check_pair(shapes[i][k], shapes[j][k], self._pair_name(i, j, k))
        if self.peer_feature_shapes is not None:
            if self.peer_feature_shapes != shapes:
                raise ValueError(
                    f"Knowledge part {self.name!r} was built for feature shapes {self.peer_feature_shapes}, not "
                    f"{shapes}; use a new part for different peers."
                )
            return
        self.peer_feature_shapes = shapes
        self.build_connectors(shapes)
        self.connectors.built = True

    def _pair_name(self, i, j, k):
        return (
            f"{type(self).__name__} part {self.name!r}, peer {i} ({self.layers_for_peer(i)[k]}) learning from "
            f"peer {j} ({self.layers_for_peer(j)[k]})"
        )

    def check_pair(self, own_shape, target_shape, what):
        """Raise `ValueError` when peer i's feature of `own_shape` cannot learn from one of `target_shape`."""

    def build_connectors(self, shapes):
        """Build trainable connectors from `shapes[i][k]`, the shape of peer i's k-th layer (None batch), and
        register them with `self.connectors.set([...])`."""

    # -- step -------------------------------------------------------------------------------------------------------

    def peer_features(self, context):
        """`[[float32 tensor per layer] per peer]` from `context["peer_features"]`."""
        given = context.get("peer_features")
        if given is None:
            raise ValueError(
                f"Knowledge part {self.name!r} needs context['peer_features'] (the distiller fills it for parts "
                "that declare `feature_layers`)."
            )
        return [[ops.cast(given[i][n], "float32") for n in self.layers_for_peer(i)] for i in range(self.num_peers)]

    def represent(self, peer, position, feature, context):
        """A per-peer quantity computed once and reused by every pair (default: the feature itself)."""
        return feature

    def layer_loss(self, own, target, peer, other, position, context):
        """Peer `peer`'s loss from peer `other` at layer `position`: a `(batch,)` per-sample loss when
        `per_sample`, else a scalar. `target` is detached."""
        raise NotImplementedError(f"{type(self).__name__} must implement layer_loss().")

    def aggregate(self, pair_loss):
        """`(M,)`: for each peer i, `c * sum_{j != i} pair_loss(i, j)` (c = 1/(M-1) for "mean", 1 for "sum")."""
        scale = 1.0 / (self.num_peers - 1) if self.reduction == "mean" else 1.0
        losses = []
        for i in range(self.num_peers):
            total = sum(pair_loss(i, j) for j in range(self.num_peers) if j != i)
            losses.append(ops.cast(total, "float32") * scale)
        return ops.stack(losses)

    def targets(self, peer_logits, context):
        sample_weight = context.get("sample_weight")
        if sample_weight is not None and not self.per_sample:
            raise ValueError(
                f"Knowledge part {self.name!r} ({type(self).__name__}) compares the samples of a batch with each "
                "other, so per-sample weights (sample_weight / class_weight) have no meaning for it; train without "
                "them or use a per-sample method (FitNet, AT, NST, CRD)."
            )
        features = self.peer_features(context)
        own = [
            [self.represent(i, k, f, context) for k, f in enumerate(features[i])] for i in range(self.num_peers)
        ]
        detached = [keras.tree.map_structure(ops.stop_gradient, r) for r in own]

        def pair_loss(i, j):
            total = 0.0
            for k in range(len(own[i])):
                loss = self.layer_loss(own[i][k], detached[j][k], i, j, k, context)
                total = total + (_batch_mean(loss, sample_weight) if self.per_sample else loss)
            return total

        return PartOutput(peer_losses=self.aggregate(pair_loss))

    def get_config(self):
        layers = self.feature_layers
        return {
            **super().get_config(),
            "layers": [list(n) for n in layers] if isinstance(layers, list) else list(layers),
            "reduction": self.reduction,
        }
