"""The contract every knowledge part follows.

A knowledge part turns this step's peer logits (and, for some parts, state of its own) into soft targets:

    targets       (batch, J, classes)  probability distributions, J of them per sample
    pair_weights  (peers, J)           how much peer i learns from target j

and the distiller adds `weight * schedule * sum_i sum_j W[i, j] * KD(target_j || peer_i)` to the loss, with the KD
term of `keras_okd.losses.pairwise_kd` at the part's temperature. A part may also return extra losses of its own
(a trainable head's cross-entropy, say) and pending state writes, which the distiller commits only after the step's
loss is known to be finite and only in training.
"""

import keras
from keras import ops


class KnowledgePart(keras.layers.Layer):
    """Base class of the knowledge parts (a `keras.layers.Layer`, so state and heads are tracked and saved).

    Subclasses implement `targets` and, when they keep state, `commit`.

    Args:
        weight: the constant factor of this part's KD term (the papers' lambda).
        temperature: the temperature of the softened distributions, for targets and students alike.
        name: the part's name; per-peer logs are named `student_{i}_{name}`.

    Attributes:
        schedule: a scalar non-trainable variable multiplied into the weight; `keras_okd.callbacks` set it at the
            start of each epoch (warm-up, ramp-up, decay), so compiled steps read it without retracing.
        needs_index: whether the part needs each sample's index in the training set.
        needs_teacher: whether the part reads the mean teacher's logits (`context["teacher_logits"]`).
        needs_features: whether the part reads the peers' pooled features (a multi-branch student's
            `context["features"]` and `context["shared_features"]`).
        loss_names: names of the extra losses the part returns.
    """

    needs_index = False
    needs_teacher = False
    needs_features = False
    loss_names = ()

    def __init__(self, weight=1.0, temperature=1.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        weight, temperature = float(weight), float(temperature)
        if not weight >= 0.0:
            raise ValueError(f"{type(self).__name__}: weight must be >= 0, got {weight}.")
        if not temperature > 0.0:
            raise ValueError(f"{type(self).__name__}: temperature must be > 0, got {temperature}.")
        self.weight = weight
        self.temperature = temperature
        self.num_peers = None
        self.num_classes = None
        self.schedule = self.add_weight(
            shape=(), initializer="ones", trainable=False, dtype="float32", name="schedule"
        )

    def build_for_peers(self, num_peers, num_classes, feature_shapes=None):
        """Create the part's state for `num_peers` peers of `num_classes` classes. Called by the distiller.

        Args:
            num_peers: M.
            num_classes: C.
            feature_shapes: for a multi-branch student, `{"features": [shape per peer], "shared_features": shape}`;
                None for independent students.
        """
        if self.needs_features and feature_shapes is None:
            raise ValueError(
                f"Knowledge part {self.name!r} ({type(self).__name__}) works on the branches of one multi-branch "
                "student (keras_okd.models.multi_branch), not on independent students."
            )
        if self.built:  # e.g. rebuilt from a saved config
            if (self.num_peers, self.num_classes) != (num_peers, num_classes):
                raise ValueError(
                    f"Knowledge part {self.name!r} was built for {self.num_peers} peers x {self.num_classes} classes, "
                    f"not {num_peers} x {num_classes}; use a new part for a different group of peers."
                )
        else:
            self.build((None, int(num_peers), int(num_classes)))
        self.build_heads(feature_shapes)

    def build_heads(self, feature_shapes):
        """Build trainable heads from the peers' feature shapes (parts with heads override this)."""

    def build(self, input_shape):
        """Record the peer count and class count from `input_shape = (batch, peers, classes)`."""
        _, self.num_peers, self.num_classes = (None, *map(int, input_shape[1:]))
        self.built = True

    def targets(self, peer_logits, context):
        """Return `{"targets": (B, J, C), "pair_weights": (M, J)}`, optionally with `"losses"` and `"state"`.

        Args:
            peer_logits: `(batch, peers, classes)` logits of this step.
            context: dict with `"index"` (integer `(batch,)` or None), `"labels"` (`(batch,)`), `"training"`
                (Python bool), `"sample_weight"` (or None), and where the distiller has them `"teacher_logits"`
                `(batch, peers, classes)`, `"features"` (list of `(batch, F)`) and `"shared_features"`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement targets().")

    def commit(self, state, finite):
        """Write the pending `state` returned by `targets`; `finite` is a boolean scalar tensor that is False when
        this step's loss is not finite, in which case nothing may change."""

    def get_config(self):
        config = super().get_config()
        config.update({"weight": self.weight, "temperature": self.temperature})
        return config


def other_peers(num_peers, reduction="mean"):
    """Pair weights `(M, M)` for "peer i learns from every other peer j": zero diagonal, ones elsewhere, divided by
    `M - 1` when `reduction == "mean"`.

    Args:
        num_peers: M.
        reduction: `"mean"` (average over the M - 1 other peers) or `"sum"`.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
    weights = 1.0 - ops.eye(num_peers, dtype="float32")
    return weights / (num_peers - 1) if reduction == "mean" else weights
