"""FitNets (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015), made online.

Eq. (3) of the paper: `L_HT = 1/2 || u_h(x) - r(v_g(x)) ||^2`, where `u_h` is the teacher's hint layer, `v_g` the
student's guided layer and `r` a trainable regressor. Online, every peer i regresses its guided layer onto every
other peer j's hint layer through its own regressor `r_ij` (one per ordered pair and layer: a pair of different
networks needs its own mapping, as in the paper); the hint is detached.
"""

import dataclasses

import keras
from keras import ops

from keras_okd.knowledge.features.base import FeatureDistillation, check_rank


def hint_loss(regressed, hint):
    """Per-sample hint loss: the mean over a sample's elements of `(r(v_g(x)) - u_h(x))^2`.

    FitNets' Eq. (3) writes `1/2 ||u_h - r(v_g)||^2`, the sum over the hint's elements; this is that sum divided by
    half the element count (the normalisation of CRD's benchmark code, whose weight 100 goes with it). The paper
    trains hints alone in a first stage, where the scale only rescales the learning rate.

    Args:
        regressed: `(batch, ...)` the student's regressed guided features `r(v_g(x))`.
        hint: `(batch, ...)` the hint `u_h(x)`, same shape.

    Returns:
        `(batch,)` float32.
    """
    diff = ops.cast(regressed, "float32") - ops.cast(hint, "float32")
    return ops.mean(ops.reshape(ops.square(diff), (ops.shape(diff)[0], -1)), axis=-1)


def regressor_kind(own_shape, target_shape, what="FitNet"):
    """Which regressor maps a guided layer of `own_shape` onto a hint of `target_shape` (None batch).

    Returns `("dense", None)` for pooled features; for image features `("conv", kernel)`, a "valid" convolution with
    kernel `(1 + H_g - H_h, 1 + W_g - W_h)` (the paper's convolutional regressor, Sec. 2.2; 1x1 when the sizes match),
    or `("transpose", kernel)` when the guided layer is smaller than the hint: the transposed convolution with kernel
    `(1 + H_h - H_g, 1 + W_h - W_g)`, which maps it onto the hint's size. Raises `ValueError` for anything else.
    """
    check_rank(own_shape, (2, 4), what, "FitNet")
    check_rank(target_shape, (2, 4), what, "FitNet")
    if len(own_shape) != len(target_shape):
        raise ValueError(
            f"{what}: cannot regress a feature of shape {own_shape} onto a hint of shape {target_shape}; pair image "
            "layers with image layers and pooled with pooled."
        )
    if len(own_shape) == 2:
        return "dense", None
    (hg, wg), (hh, wh) = tuple(own_shape[1:3]), tuple(target_shape[1:3])
    if hg >= hh and wg >= wh:
        return "conv", (1 + hg - hh, 1 + wg - wh)
    if hg <= hh and wg <= wh:
        return "transpose", (1 + hh - hg, 1 + wh - wg)
    raise ValueError(
        f"{what}: the guided layer is {hg}x{wg} and the hint {hh}x{wh}: taller but narrower (or the reverse), which "
        "no single convolution maps onto the other; pick layers whose sizes are ordered alike."
    )


def regressor(own_shape, target_shape, batch_norm=True, activation="relu", name=None):
    """FitNets' regressor from a guided layer of `own_shape` onto a hint of `target_shape` (None batch): the layer
    `regressor_kind` names, to the hint's channels, then batch normalisation and `activation`, each optional (CRD's
    benchmark code's `ConvReg` is conv-BN-ReLU).

    Returns:
        A built `keras.Sequential` computing in float32.
    """
    kind, kernel = regressor_kind(own_shape, target_shape, f"FitNet regressor {name!r}")
    channels, use_bias = int(target_shape[-1]), not batch_norm
    if kind == "dense":
        layers = [keras.layers.Dense(channels, use_bias=use_bias, dtype="float32")]
    elif kind == "conv":
        layers = [keras.layers.Conv2D(channels, kernel, use_bias=use_bias, dtype="float32")]
    else:
        layers = [keras.layers.Conv2DTranspose(channels, kernel, use_bias=use_bias, dtype="float32")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype="float32"))
    if activation is not None:
        layers.append(keras.layers.Activation(activation, dtype="float32"))
    model = keras.Sequential(layers, name=name)
    model.build(tuple(own_shape))
    return model


@keras.saving.register_keras_serializable(package="keras_okd")
class FitNet(FeatureDistillation):
    """Online FitNets: peer i regresses its guided layer onto each other peer's hint layer (detached).

    Peer i's loss: `mean_{j != i} sum_k mean_b hint_loss(r_ijk(f_i^k), stop_gradient(f_j^k))` (see `hint_loss`),
    one regressor `r_ijk` per ordered pair and layer (see `regressor`; heterogeneous channels and spatial sizes are
    handled by the regressor; image and pooled layers cannot be paired). The regressors belong to the part: trained
    with the peers, saved with the distiller, absent from exported students. The paper's separate hint-training stage
    becomes a term trained throughout, as in TSB's online version "built upon DML".

    Args:
        layers: the guided/hint layers, matched by position (CRD's benchmark: the second stage, `("stage_2",)`).
        weight: the loss weight (CRD's benchmark: 100).
        batch_norm: batch normalisation after each regressor's convolution (default True, as `ConvReg`).
        activation: activation after the regressor, or None (default `"relu"`, as `ConvReg`; the paper asks for the
            hint layer's own non-linearity, which is ReLU for the zoo's ResNet stages; a wide ResNet's group output is
            a pre-activation sum, for which `activation=None` is the faithful choice).
        reduction: `"mean"` or `"sum"` over the other peers.
        name: part name (default `"fitnet"`).

    Example:

    >>> part = FitNet(layers=("stage_2",), weight=100.0)
    >>> part.build_for_peers(2, 10, {"peer_features": [{"stage_2": (None, 16, 16, 32)},
    ...                                                 {"stage_2": (None, 16, 16, 64)}]})
    >>> [tuple(r.output_shape) for r in part.connectors]
    [(None, 16, 16, 64), (None, 16, 16, 32)]
    """

    label = "FitNet"  # the method's name in TSB Table 4 and the report
    def __init__(
        self,
        layers=("stage_2",),
        weight=100.0,
        batch_norm=True,
        activation="relu",
        reduction="mean",
        name="fitnet",
        **kwargs,
    ):
        super().__init__(layers=layers, weight=weight, reduction=reduction, name=name, **kwargs)
        self.batch_norm = bool(batch_norm)
        self.activation = activation

    @classmethod
    def default_layers(cls, stages, pool):
        return tuple(stages[1:2] or stages[-1:])  # the second stage (CRD's code: hint layer 2)

    def _index(self, i, j, k):
        """Position of r_ijk in `connectors`: ordered pairs (i, j != i) in order, then layers."""
        pair = i * (self.num_peers - 1) + (j if j < i else j - 1)
        return pair * len(self.peer_feature_shapes[0]) + k

    def check_pair(self, own_shape, target_shape, what):
        regressor_kind(own_shape, target_shape, what)

    def build_connectors(self, shapes):
        regressors = []
        for i in range(self.num_peers):
            for j in range(self.num_peers):
                if j == i:
                    continue
                for k in range(len(shapes[i])):
                    regressors.append(
                        regressor(
                            shapes[i][k], shapes[j][k], self.batch_norm, self.activation,
                            name=f"{self.name}_regressor_{i}_{j}_{k}",
                        )
                    )
        self.connectors.set(regressors)

    def layer_loss(self, own, target, peer, other, position, context):
        r = self.connectors[self._index(peer, other, position)]
        return hint_loss(r(own, training=context["training"]), target)

    def _moving_state(self):
        return [v for r in self.connectors for v in r.non_trainable_variables]

    def targets(self, peer_logits, context):
        # In training the regressors' batch normalisation moves its statistics; they are put back by `commit` when
        # the step's loss is not finite, as the distiller does for the students' own.
        before = [ops.copy(v.value) for v in self._moving_state()] if context.get("training") else []
        out = super().targets(peer_logits, context)
        return dataclasses.replace(out, state={"moving": before}) if before else out

    def commit(self, state, finite):
        for variable, old in zip(self._moving_state(), state["moving"]):
            variable.assign(ops.where(finite, variable.value, old))

    def get_config(self):
        return {**super().get_config(), "batch_norm": self.batch_norm, "activation": self.activation}
