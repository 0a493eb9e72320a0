"""Small trainable heads that multi-branch online distillation puts on top of a student.

* `PeerEnsembleHead` (PCL, DKEL): the peers' pooled features concatenated, then one
  linear layer; trained with its own cross-entropy, its logits are the ensemble target.
* `GateHead` (ONE): shared pooled features -> Dense(m) -> BN -> ReLU -> softmax; the
  ensemble is the gate-weighted sum of the branch logits.

Both are ordinary Keras layers built only from `Dense` / `BatchNormalization`; they are
serializable (`package="keras_okd"`), so a model that contains them needs keras_okd to
load. Single networks and extracted branches never contain them.
"""

import keras
from keras import layers, ops

from keras_okd.models._common import BN_EPSILON, BN_MOMENTUM, sync_supported


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
        synchronized_bn: use `BatchNormalization(synchronized=True)` (TensorFlow only).
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
        self.bn = layers.BatchNormalization(
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            synchronized=sync_supported(self.synchronized_bn),
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
