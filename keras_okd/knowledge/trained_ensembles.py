"""Knowledge from trainable heads on a multi-branch student: PCL/DKEL's peer ensemble and ONE's gate.

Each part owns its head (`PeerEnsembleHead`, `GateHead`: small Keras layers that exist only for distillation, so they
live here and never in an exported student), trains it with its own cross-entropy (logged as `{part}_ce`), and gives
every peer the head's ensemble prediction, detached, as target.
"""

import keras
from keras import layers, ops

from keras_okd.backend import synchronized_batch_norm_supported
from keras_okd.knowledge.base import KnowledgePart, PartOutput
from keras_okd.losses import peer_cross_entropy, soften

@keras.saving.register_keras_serializable(package="keras_okd")
class PeerEnsembleHead(layers.Layer):
    """Peer-ensemble classifier: concatenate the peers' features, then a linear layer.

    For 3 ResNet-32 branches (64 features each) and 100 classes this is
    `Linear(192, 100)`: 19,300 parameters.

    Args:
        num_classes: number of output logits.
        use_bias: whether the linear layer has a bias.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        features: a list of `(batch, F_i)` tensors, one per peer.

    Returns:
        `(batch, num_classes)` ensemble logits.

    Example:

    >>> import numpy as np
    >>> head = PeerEnsembleHead(100)
    >>> feats = [np.zeros((2, 64), "float32") for _ in range(3)]
    >>> tuple(head(feats).shape)
    (2, 100)
    """

    def __init__(self, num_classes, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.use_bias = bool(use_bias)
        self.dense = layers.Dense(self.num_classes, use_bias=self.use_bias, name="dense")

    def build(self, input_shape):
        shapes = list(input_shape)
        total = sum(int(shape[-1]) for shape in shapes)
        self.dense.build((None, total))

    def call(self, features):
        return self.dense(ops.concatenate(list(features), axis=-1))

    def compute_output_shape(self, input_shape):
        return (list(input_shape)[0][0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "use_bias": self.use_bias})
        return config


@keras.saving.register_keras_serializable(package="keras_okd")
class GateHead(layers.Layer):
    """ONE's gate: shared features -> Dense(m) -> BatchNorm -> ReLU -> softmax.

    For a ResNet-32 trunk (32 shared features) and 3 branches: Dense 32*3 + 3 = 99 and
    BatchNorm gamma/beta 6, i.e. 105 trainable parameters.

    Args:
        num_branches: m, the number of branches to weight.
        synchronized_bn: use `BatchNormalization(synchronized=True)` (TensorFlow only; ignored elsewhere).
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        shared_features: `(batch, F0)` pooled features of the shared trunk.
        training: whether BatchNormalization uses batch statistics.

    Returns:
        `(batch, num_branches)` non-negative weights summing to 1 per sample.

    Example:

    >>> import numpy as np
    >>> gate = GateHead(3)
    >>> tuple(gate(np.zeros((2, 32), "float32")).shape)
    (2, 3)
    """

    def __init__(self, num_branches, synchronized_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.num_branches = int(num_branches)
        self.synchronized_bn = bool(synchronized_bn)
        self.dense = layers.Dense(self.num_branches, use_bias=True, name="dense")
        self.bn = layers.BatchNormalization(  # PyTorch's defaults, as the zoo's networks use
            momentum=0.9,
            epsilon=1e-5,
            synchronized=self.synchronized_bn and synchronized_batch_norm_supported(),
            name="bn",
        )

    def build(self, input_shape):
        self.dense.build(tuple(input_shape))
        self.bn.build((None, self.num_branches))

    def call(self, shared_features, training=None):
        x = self.dense(shared_features)
        x = self.bn(x, training=training)
        x = ops.relu(x)
        return ops.softmax(x, axis=-1)

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape)[0], self.num_branches)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_branches": self.num_branches, "synchronized_bn": self.synchronized_bn}
        )
        return config



def _ensemble_knowledge(ensemble_logits, part, context):
    ce = peer_cross_entropy(context["labels"], ops.expand_dims(ensemble_logits, 1), context["sample_weight"])[0]
    return PartOutput(
        targets=ops.expand_dims(soften(ensemble_logits, part.temperature), 1),
        pair_weights=ops.ones((part.num_peers, 1), dtype="float32"),
        losses={"ce": ce},
    )


@keras.saving.register_keras_serializable(package="keras_okd")
class PeerEnsemble(KnowledgePart):
    """PCL's peer ensemble E: the branches' pooled features concatenated, then a linear head trained with its own
    cross-entropy (L_ce^E); every peer learns from softmax(E / tau) (L_pe, PCL Eq. 3).

    Args:
        weight: factor of the KD term L_pe.
        temperature: softening temperature.
        name: part name (default `"pe"`).

    Example:

    ```python
    student = keras_okd.models.multi_branch("resnet32", num_branches=3, num_classes=100, per_branch_inputs=True)
    distiller = keras_okd.OnlineDistiller(student, knowledge=[PeerEnsemble(temperature=3.0)])
    ```
    """

    needs_features = True
    loss_names = ("ce",)

    def __init__(self, weight=1.0, temperature=1.0, name="pe", **kwargs):
        super().__init__(weight=weight, temperature=temperature, name=name, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        self.head = PeerEnsembleHead(self.num_classes, name="peer_ensemble_head")

    def build_heads(self, feature_shapes):
        if not self.head.built:
            self.head.build([tuple(s) for s in feature_shapes["features"]])

    def targets(self, peer_logits, context):
        return _ensemble_knowledge(ops.cast(self.head(context["features"]), "float32"), self, context)


@keras.saving.register_keras_serializable(package="keras_okd")
class GateEnsemble(KnowledgePart):
    """ONE's gated ensemble (Lan, Zhu and Gong, NeurIPS 2018): a gate on the trunk's pooled features weighs the
    branches' logits, `e = sum_i g_i z_i`; `e` is trained with its own cross-entropy (gradient reaches the branches and
    the gate), and every branch learns from softmax(e / tau), detached.

    Args:
        weight: factor of the KD term.
        temperature: softening temperature (ONE: 3).
        name: part name (default `"gate"`).

    Example:

    ```python
    student = keras_okd.models.multi_branch("resnet32", num_branches=3, num_classes=100)
    distiller = keras_okd.OnlineDistiller(student, knowledge=[GateEnsemble(temperature=3.0)])
    ```
    """

    needs_features = True
    loss_names = ("ce",)

    def __init__(self, weight=1.0, temperature=1.0, name="gate", **kwargs):
        super().__init__(weight=weight, temperature=temperature, name=name, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        self.head = GateHead(self.num_peers, name="gate_head")

    def build_heads(self, feature_shapes):
        if not self.head.built:
            self.head.build(tuple(feature_shapes["shared_features"]))

    def targets(self, peer_logits, context):
        gate = ops.cast(self.head(context["shared_features"], training=context["training"]), "float32")  # (B, M)
        ensemble = ops.sum(ops.expand_dims(gate, -1) * peer_logits, axis=1)
        return _ensemble_knowledge(ensemble, self, context)
