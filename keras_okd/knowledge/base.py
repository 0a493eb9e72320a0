"""The contract every knowledge part follows.

A knowledge part turns this step's peer outputs (and, for some parts, state of its own) into a loss term per peer.
Its `targets(peer_logits, context)` returns a `PartOutput` in one of two forms:

- soft targets (logit-level knowledge):

      targets       (batch, J, classes)  probability distributions, J of them per sample
      pair_weights  (peers, J)           how much peer i learns from target j

  and the distiller's term for peer i is `sum_j W[i, j] * KD(target_j || peer_i)`, with the KD term of
  `keras_okd.losses.pairwise_kd` at the part's temperature;
- or `peer_losses` `(peers,)`, the part's own term for each peer (feature-level knowledge: FitNet, AT, ...), computed
  from the intermediate layers the part names in `feature_layers` (the distiller taps them from every peer and hands
  them over as `context["peer_features"]`).

The distiller adds `weight * schedule * sum_i term_i` to the loss and logs `term_i` as `{peer}_{part name}`, where
`schedule` is this epoch's value of the part's own schedules (`KnowledgePart(schedule=...)`, see
`keras_okd.knowledge.schedules`: a warm-up, a ramp-up, a decay; 1 without any). A `PartOutput` may also carry extra
losses of the part's own (a trainable head's cross-entropy, say), added as they are, and pending state writes, which
the distiller commits only after the step's loss is known to be finite and only in training.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_okd.knowledge.schedules import deserialize_schedules, schedule_list, schedule_product
from keras_okd.losses import pairwise_kd


@dataclasses.dataclass(frozen=True, eq=False)
class PartOutput(Mapping):
    """What a knowledge part's `targets` gives for one step: soft targets, or each peer's own term, and extras.

    Exactly one of two forms: `targets` `(batch, J, classes)` with `pair_weights` `(peers, J)` (the distiller's
    pairwise KD), or `peer_losses` `(peers,)` (the part's own term per peer). Optionally:

    Attributes:
        targets: soft targets, probability distributions `(batch, J, classes)`.
        pair_weights: `(peers, J)`, how much peer i learns from target j.
        peer_losses: `(peers,)`, the part's own term for each peer.
        losses: `{name: scalar}` extra losses of the part (declared in `loss_names`), added to the loss as they are.
        state: pending state writes, handed to the part's `commit` once the step's loss is known finite (training).
        ce_scale: `(peers,)` factor (no gradient) on each peer's cross-entropy (0 pauses a peer: SwitOKD's expert
            mode).

    It also reads as a mapping of the fields that are set (`out["targets"]`, `"state" in out`), the plain dict that
    parts returned before it; `PartOutput.of` reads such a dict, so a part that still returns one keeps working.

    Example:

    >>> import numpy as np
    >>> out = PartOutput(peer_losses=np.zeros(2, "float32"))
    >>> sorted(out), out.losses, out.state is None
    (['peer_losses'], {}, True)
    >>> PartOutput.of({"targets": np.ones((1, 1, 3)) / 3, "pair_weights": np.ones((2, 1))}).pair_weights.shape
    (2, 1)
    >>> PartOutput(targets=np.ones((1, 1, 3)) / 3)
    Traceback (most recent call last):
    ValueError: A knowledge part's output holds targets and pair_weights, or peer_losses (one of the two); got targets.
    """

    targets: Any = None
    pair_weights: Any = None
    peer_losses: Any = None
    losses: dict = dataclasses.field(default_factory=dict)
    state: Any = None
    ce_scale: Any = None

    def __post_init__(self):
        soft = (self.targets is not None, self.pair_weights is not None)
        if soft not in ((True, True), (False, False)) or any(soft) == (self.peer_losses is not None):
            raise ValueError("A knowledge part's output holds targets and pair_weights, or peer_losses (one of the "
                             f"two); got {', '.join(self) or 'neither'}.")

    @classmethod
    def of(cls, output):
        """`output` as a `PartOutput`: itself, or a dict of the same keys (as parts returned before this type).

        Raises:
            ValueError: a key that is no field (named, with the fields).
        """
        if isinstance(output, cls):
            return output
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(output) - set(fields))
        if unknown:
            raise ValueError(f"A knowledge part's output has keys {unknown}, which are not among {fields}.")
        return cls(**output)

    def __getitem__(self, key):
        if key not in self._present():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._present())

    def __len__(self):
        return len(self._present())

    def _present(self):
        return [f.name for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None and (f.name != "losses" or self.losses)]


class KnowledgePart(keras.layers.Layer):
    """Base class of the knowledge parts (a `keras.layers.Layer`, so state and heads are tracked and saved).

    Subclasses implement `targets` (returning a `PartOutput`) and, when they keep state, `commit`.

    Args:
        weight: the constant factor of this part's KD term (the papers' lambda).
        temperature: the temperature of the softened distributions, for targets and students alike.
        layers: the intermediate layers the part reads (feature-level parts): a sequence of layer names for every
            peer (e.g. `("stage_3",)` for the zoo's models), or a list with one sequence per peer (students whose
            layers are named differently). A name may be a path `"sub_model/layer"` into a nested functional model
            and may contain `{peer}`, replaced by the peer's index (a multi-branch student's `"branch_{peer}/stage_3"`).
        name: the part's name; per-peer logs are named `student_{i}_{name}`.
        schedule: the part's schedule of its weight over the epochs: a `keras_okd.knowledge.schedules.Schedule`
            (`WarmUp(20)`: TSB's warm-up), a list of them (their values multiply), or None (the weight stays
            constant). `keras_okd.distiller.callbacks.KnowledgeSchedule` advances it at the start of every epoch.

    Attributes:
        schedules: the part's schedules (a tuple, empty for none).
        schedule: a scalar non-trainable variable multiplied into the weight, this epoch's value of `schedules`
            (`set_schedule`), so compiled steps read it without retracing.
        needs_index: whether the part needs each sample's index in the training set.
        needs_teacher: whether the part reads the mean teacher's logits (`context["teacher_logits"]`).
        needs_features: whether the part reads the peers' pooled features (a multi-branch student's
            `context["features"]` and `context["shared_features"]`).
        needs_inputs: whether the part reads each peer's input batch (`context["inputs"]`, after its view).
        loss_names: names of the extra losses the part returns.
        outer_every: None, or N: the part trains something outside the gradient step (L-MCL's meta-optimised pair
            weights): `fit` calls `outer_step(distiller, inputs, labels)` after batches 0, N, 2N, ... of every epoch,
            on that batch (`keras_okd.distiller.callbacks.OuterSteps`).

    Example: a part whose target for every peer is the uniform distribution (label smoothing as knowledge):

    ```python
    class Uniform(keras_okd.knowledge.KnowledgePart):
        def targets(self, peer_logits, context):
            batch = keras.ops.shape(peer_logits)[0]
            uniform = keras.ops.full((batch, 1, self.num_classes), 1.0 / self.num_classes)
            return keras_okd.knowledge.PartOutput(targets=uniform, pair_weights=keras.ops.ones((self.num_peers, 1)))

    uniform = Uniform(weight=0.1, name="uniform", schedule=keras_okd.knowledge.WarmUp(5))   # from epoch 5 on
    distiller = keras_okd.OnlineDistiller(students, knowledge=[uniform])
    ```
    """

    needs_index = False
    needs_teacher = False
    needs_features = False
    needs_inputs = False
    loss_names = ()
    outer_every = None

    def __init__(self, weight=1.0, temperature=1.0, layers=None, name=None, schedule=None, **kwargs):
        super().__init__(name=name, **kwargs)
        weight, temperature = float(weight), float(temperature)
        if not weight >= 0.0:
            raise ValueError(f"{type(self).__name__}: weight must be >= 0, got {weight}.")
        if not temperature > 0.0:
            raise ValueError(f"{type(self).__name__}: temperature must be > 0, got {temperature}.")
        self.weight = weight
        self.temperature = temperature
        self.feature_layers = _layer_spec(layers, type(self).__name__)
        self.schedules = schedule_list(schedule, type(self).__name__)
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
            feature_shapes: what the distiller's `Peers.feature_shapes()` reports: `{"peer_features": [{layer name:
                shape} per peer]}` and, for a multi-branch student, `"features"` (pooled shape per branch) and
                `"shared_features"`.
        """
        feature_shapes = feature_shapes or {}
        self.check_layers(num_peers)
        if self.needs_features and "features" not in feature_shapes:
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
        """This step's knowledge: soft targets for the peers, or each peer's own term.

        Args:
            peer_logits: `(batch, peers, classes)` logits of this step.
            context: dict with `"index"` (integer `(batch,)` or None), `"labels"` (`(batch,)`), `"training"`
                (Python bool), `"sample_weight"` (or None), and where the distiller has them `"teacher_logits"`
                `(batch, peers, classes)`, `"peer_features"` (a list over peers of `{layer name: tensor}` for the
                layers in `feature_layers`), `"inputs"` (each peer's input batch, for parts with `needs_inputs`),
                `"features"` (a multi-branch student's pooled features, list of `(batch, F)`) and `"shared_features"`.

        Returns:
            A `PartOutput`: `targets` and `pair_weights`, or `peer_losses` `(peers,)`; optionally `losses`, `state`
            (passed to `commit`) and `ce_scale`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement targets().")

    def state_bytes(self):
        """Bytes of the part's per-sample state (non-trainable variables that are not scalars), 0 for parts with
        `needs_index` False."""
        if not self.needs_index:
            return 0
        return sum(int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
                   for v in self.non_trainable_weights if len(v.shape))

    def check_layers(self, num_peers):
        """Refuse per-peer `layers` that do not give one sequence per peer."""
        spec = self.feature_layers
        if spec and not isinstance(spec, tuple) and len(spec) != num_peers:
            raise ValueError(
                f"Knowledge part {self.name!r}: layers gives {len(spec)} per-peer sequences for {num_peers} peers; "
                "give one sequence per peer, or one sequence for all."
            )

    def layers_for_peer(self, index):
        """The names of the layers this part reads from peer `index` (`{peer}` replaced by the index)."""
        spec = self.feature_layers
        if not spec:
            return ()
        names = spec if isinstance(spec[0], str) else spec[index]
        return tuple(name.replace("{peer}", str(index)) for name in names)

    def peer_terms(self, output, peer_logits, sample_weight=None):
        """Each peer's term `(peers,)` from what `targets` returned (a `PartOutput`): its `peer_losses`, or the
        weighted KD from its soft targets."""
        output = PartOutput.of(output)
        if output.peer_losses is not None:
            return ops.cast(output.peer_losses, "float32")
        return pairwise_kd(output.targets, peer_logits, self.temperature, output.pair_weights, sample_weight)

    def schedule_value(self, epoch):
        """The product of the part's schedules at a 0-based `epoch` (1.0 without any)."""
        return schedule_product(self.schedules, epoch)

    def set_schedule(self, value):
        """Set this epoch's `schedule` (`KnowledgeSchedule` calls it at the start of every epoch)."""
        # a float32 array, not a Python float: JAX would retrace the train step for a weakly-typed scalar
        self.schedule.assign(np.asarray(value, dtype="float32"))

    def outer_step(self, distiller, inputs, labels):
        """Work between two training steps, eagerly, on a training batch (`inputs` with `"index"`, integer
        `labels`); parts with `outer_every` implement it."""
        raise NotImplementedError(f"{type(self).__name__} sets outer_every but has no outer_step.")

    def commit(self, state, finite):
        """Write the pending `state` returned by `targets`; `finite` is a boolean scalar tensor that is False when
        this step's loss is not finite, in which case nothing may change."""

    def get_config(self):
        config = super().get_config()
        config.update({"weight": self.weight, "temperature": self.temperature})
        if self.feature_layers:
            config["layers"] = [list(n) if not isinstance(n, str) else n for n in self.feature_layers]
        if self.schedules:
            config["schedule"] = [keras.saving.serialize_keras_object(s) for s in self.schedules]
        return config


def check_parts(parts, schedules=None, has_teacher=True):
    """`parts` as a list, refusing anything but `KnowledgePart`s, repeated names (names name the logs), parts that
    read a mean teacher the distiller does not keep, and schedules of parts that are not there.

    `schedules` is the older form of the parts' schedules, `{part name: [Schedule, ...]}` (the `schedules` of a
    distiller saved before the parts owned theirs): each list is handed to the part it names, which must have no
    other schedules of its own.
    """
    parts = list(parts or ())
    for part in parts:
        if not isinstance(part, KnowledgePart):
            raise TypeError(f"knowledge parts must be KnowledgePart instances, got {type(part).__name__}.")
    names = [part.name for part in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"Knowledge part names must be distinct (they name the logs); got {names}.")
    schedules = deserialize_schedules(schedules)
    unknown = sorted(set(schedules) - set(names))
    if unknown:
        raise ValueError(f"schedules name parts {unknown} that are not among the knowledge parts {names}.")
    twice = [p.name for p in parts if p.name in schedules and p.schedules and p.schedules != tuple(schedules[p.name])]
    if twice:
        raise ValueError(f"Knowledge parts {twice} have schedules of their own and other ones in schedules=; give "
                         "each part's schedule once, on the part (schedule=...).")
    needing_teacher = [part.name for part in parts if part.needs_teacher]
    if needing_teacher and not has_teacher:
        raise ValueError(f"Knowledge parts {needing_teacher} read the mean teacher: pass teacher_eta (e.g. 0.001).")
    for part in parts:
        if part.name in schedules:
            part.schedules = tuple(schedules[part.name])
    return parts


def _layer_spec(layers, owner):
    """`layers` as a tuple of names (every peer) or a list of per-peer tuples; None stays None. Errors name the part
    and the fix."""
    if layers is None:
        return None
    if isinstance(layers, str):
        return (layers,)
    try:
        layers = list(layers)
    except TypeError:
        raise ValueError(f"{owner}: layers must be a layer name, a sequence of names, or one sequence of names per "
                         f"peer; got {layers!r}.") from None
    if not layers:
        raise ValueError(f"{owner}: layers is empty; name at least one layer (e.g. layers=('stage_3',)).")
    if all(isinstance(name, str) for name in layers):
        return tuple(layers)
    if any(isinstance(item, str) for item in layers):
        raise ValueError(
            f"{owner}: layers mixes names and per-peer sequences ({layers!r}); give either names for every peer "
            "(('stage_2', 'stage_3')) or one sequence per peer ([('stage_3',), ('block_5',)])."
        )
    return [_layer_spec(item, owner) for item in layers]


def other_peers(num_peers, reduction="mean"):
    """Pair weights `(M, M)` for "peer i learns from every other peer j": zero diagonal, ones elsewhere, divided by
    `M - 1` when `reduction == "mean"`.

    Args:
        num_peers: M.
        reduction: `"mean"` (average over the M - 1 other peers) or `"sum"`.

    Returns:
        A float32 `(M, M)` tensor, the `pair_weights` of `keras_okd.losses.pairwise_kd`.

    Raises:
        ValueError: `reduction` is neither `"mean"` nor `"sum"`.

    Example:

    >>> import keras
    >>> keras.ops.convert_to_numpy(other_peers(3))
    array([[0. , 0.5, 0.5],
           [0.5, 0. , 0.5],
           [0.5, 0.5, 0. ]], dtype=float32)
    >>> keras.ops.convert_to_numpy(other_peers(2, reduction="sum"))
    array([[0., 1.],
           [1., 0.]], dtype=float32)
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
    weights = 1.0 - ops.eye(num_peers, dtype="float32")
    return weights / (num_peers - 1) if reduction == "mean" else weights
