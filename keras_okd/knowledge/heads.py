"""Knowledge from trainable heads on a multi-branch student: PCL/DKEL's peer ensemble and ONE's gate.

Each part owns its head (a layer from `keras_okd.models`), trains it with its own cross-entropy (logged as
`{part}_ce`), and gives every peer the head's ensemble prediction, detached, as target.
"""

import keras
from keras import ops

from keras_okd.knowledge.base import KnowledgePart
from keras_okd.losses import peer_cross_entropy, soften
from keras_okd.models.heads import GateHead, PeerEnsembleHead


def _ensemble_knowledge(ensemble_logits, part, context):
    ce = peer_cross_entropy(context["labels"], ops.expand_dims(ensemble_logits, 1), context["sample_weight"])[0]
    return {
        "targets": ops.expand_dims(soften(ensemble_logits, part.temperature), 1),
        "pair_weights": ops.ones((part.num_peers, 1), dtype="float32"),
        "losses": {"ce": ce},
        "logits": ensemble_logits,
    }


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
