"""The peers of an online distiller: which networks are taught, what each one sees, and their forward pass.

A peer is one logits output. `Peers` finds them in what the user passes: a list of M >= 2 independent students
(architectures may differ; each is any `keras.Model` whose output is one `(batch, classes)` logits tensor), or one
multi-branch student (`keras_okd.models.multi_branch`: a shared trunk and M branches, its output a dict with
`"logits"`, `"features"` and `"shared_features"`). It checks them (at least two peers, one class count, logits not
probabilities), gives each peer its view of the batch (independent augmentations inside the step), runs them, and
taps intermediate layers that knowledge parts ask for (`feature_layers`, by layer name) without rewriting the
students: a tapped student is a functional model that shares the student's layers and returns the named outputs
beside the logits.

`Peers` is plain Python: the distiller owns (and Keras tracks) the networks themselves.
"""

import logging
import warnings

import keras
import numpy as np
from keras import ops

from keras_okd.distiller.inputs import is_dataset, split_inputs

_logger = logging.getLogger("keras_okd")


def is_multi_branch(model):
    """Whether `model` is a multi-branch student: a model whose output is a dict with a list under `"logits"`.

    Example:

    >>> import keras_okd
    >>> is_multi_branch(keras_okd.models.multi_branch("simple_cnn", num_branches=2))
    True
    """
    if not isinstance(model, keras.Model):
        return False
    try:
        output = model.output
    except (AttributeError, ValueError):
        return False
    return isinstance(output, dict) and isinstance(output.get("logits"), (list, tuple))


class Peers:
    """The peers of one distiller, found in `students`.

    Args:
        students: a list of 2 or more `keras.Model`s mapping the same inputs to logits over the same classes (a
            student whose name repeats an earlier one's is renamed `{name}_{i}`), or one multi-branch model.
        views: per-peer augmentation, a Keras layer applied independently for each peer inside the training step, or
            None (every peer sees the same batch).

    Attributes:
        networks: the list of networks (the students, or the one multi-branch model).
        multi_branch: whether the peers are the branches of one network.
        num_peers: M.
        num_classes: C.
        names: `student_{i}` or `branch_{i}`: the prefix of every per-peer log.

    Example:

    >>> import keras_okd
    >>> peers = Peers([keras_okd.models.get("simple_cnn") for _ in range(2)])
    >>> peers.num_peers, peers.num_classes, peers.names
    (2, 10, ['student_0', 'student_1'])
    """

    def __init__(self, students, views=None):
        self.multi_branch = is_multi_branch(students)
        if self.multi_branch:
            self.networks = [students]
            logits = students.output["logits"]
            classes = [_classes_of(t, f"branch {i} of {students.name}") for i, t in enumerate(logits)]
            self.per_branch_inputs = len(students.inputs) > 1
            if len(logits) < 2:
                raise ValueError(f"The multi-branch student {students.name} has {len(logits)} branch; 2 or more needed.")
        else:
            networks = list(students) if isinstance(students, (list, tuple)) else [students]
            if len(networks) < 2:
                raise ValueError(
                    f"OnlineDistiller needs at least 2 students, got {len(networks)}. Online distillation trains a "
                    "group of networks together; to train one network alone, call its own fit(). For the branches "
                    "of one network, pass a keras_okd.models.multi_branch model."
                )
            for i, student in enumerate(networks):
                if not isinstance(student, keras.Model):
                    raise TypeError(f"students[{i}] must be a keras.Model, got {type(student).__name__}.")
            classes = [_classes_of(_single_output(s, i), f"students[{i}] ({s.name})") for i, s in enumerate(networks)]
            _make_names_unique(networks)
            self.networks = networks
            self.per_branch_inputs = False
        if len(set(classes)) != 1:
            raise ValueError(
                f"All peers must output logits over the same classes; got class counts {classes}. "
                "Give every student the same num_classes."
            )
        if views is not None and self.multi_branch and not self.per_branch_inputs:
            raise ValueError(
                "Per-peer views need one input per branch: build the student with "
                "keras_okd.models.multi_branch(..., per_branch_inputs=True)."
            )
        if views is not None and not isinstance(views, keras.layers.Layer):
            raise TypeError(f"views must be a Keras layer (e.g. keras_okd.data.peer_views(32, 32)), got {views!r}.")
        if views is not None and not getattr(views, "supports_jit", True):
            warnings.warn(
                f"The views layer {views.name!r} ({type(views).__name__}) reports supports_jit=False, so Keras runs "
                "the whole training step uncompiled on JAX and TensorFlow (jit_compile='auto' resolves to False), op "
                "by op, which costs most of the step's speed there. keras_okd.data.RandomShiftFlip (peer_views) "
                "compiles on every backend.", stacklevel=3)
        self.views = views
        self.num_peers = len(classes)
        self.num_classes = classes[0]
        prefix = "branch" if self.multi_branch else "student"
        self.names = [f"{prefix}_{i}" for i in range(self.num_peers)]
        self._taps = {}  # id(network) -> (tapped functional model, [names]); plain dict, not tracked by Keras
        self._requested = [[] for _ in range(self.num_peers)]  # layer names each peer's features are read from
        for i, network in enumerate(self.networks):
            _warn_if_probabilities(network, self.names[i] if not self.multi_branch else network.name)

    # ------------------------------------------------------------------ views
    def views_of(self, inputs, training):
        """One input per peer: in training with `views`, an independent augmentation of the batch for each peer."""
        if training and self.views is not None:
            return [self.views(inputs, training=True) for _ in range(self.num_peers)]
        return [inputs] * self.num_peers

    # ------------------------------------------------------------------ feature taps
    def tap(self, feature_layers):
        """Make the forward pass also return, for every peer i, the outputs of the layers named in
        `feature_layers[i]` (a sequence of names per peer).

        A name is a layer of the student (`model.get_layer(name)`), or a path `"sub_model/layer"` into a nested
        functional sub-model (a multi-branch student's `"branch_{i}/stage_3"`). The tapped model shares the
        student's layers and weights. Calling `tap` again adds names.

        Raises:
            ValueError: a name that is not a layer of that peer, or a student that is not a functional model.
        """
        wanted = {}  # network index -> names
        for i, names in enumerate(feature_layers):
            names = list(names or ())
            self._requested[i] = list(dict.fromkeys(self._requested[i] + names))
            if names:
                wanted.setdefault(0 if self.multi_branch else i, []).extend(names)
        for n, names in wanted.items():
            network = self.networks[n]
            known = self._taps.get(id(network), (None, []))[1]
            names = list(dict.fromkeys(known + list(names)))
            self._taps[id(network)] = (_tapped_model(network, names), names)

    def feature_shapes(self):
        """`{"peer_features": [{layer name: shape} per peer]}`, plus `"features"` and `"shared_features"` (pooled)
        for a multi-branch student: what knowledge parts build their connectors and heads from."""
        shapes = {"peer_features": [{} for _ in range(self.num_peers)]}
        for n, network in enumerate(self.networks):
            if id(network) in self._taps:
                model, names = self._taps[id(network)]
                tensors = dict(zip(names, model.output["taps"]))
                for i in self._peers_of(n):
                    shapes["peer_features"][i] = {name: tuple(tensors[name].shape) for name in self._requested[i]}
        if self.multi_branch:
            output = self.networks[0].output
            shapes["features"] = [tuple(t.shape) for t in output["features"]]
            shapes["shared_features"] = tuple(output["shared_features"].shape)
        return shapes

    def _peers_of(self, n):
        """The peers whose outputs network `n` computes."""
        return range(self.num_peers) if self.multi_branch else [n]

    # ------------------------------------------------------------------ forward
    def forward(self, networks, views, training):
        """Run `networks` (the students, or the teacher's copies of them) on the peers' views.

        Returns:
            `(logits, extra)`: float32 logits `(batch, M, C)`; `extra` holds `"peer_features"` (a list over peers of
            `{layer name: tensor}`, when layers are tapped) and for a multi-branch student `"features"`
            (pooled features of each branch) and `"shared_features"`.
        """
        peer_features = [{} for _ in range(self.num_peers)]
        if self.multi_branch:
            out = self._run(0, networks[0], views if self.per_branch_inputs else views[0], training)
            logits = list(out["logits"])
            extra = {"features": list(out["features"]), "shared_features": out["shared_features"]}
            for i in range(self.num_peers):
                peer_features[i] = {name: out["taps"][name] for name in self._requested[i]}
        else:
            logits, extra = [], {}
            for i in range(self.num_peers):
                out = self._run(i, networks[i], views[i], training)
                if isinstance(out, dict) and "taps" in out:
                    peer_features[i].update(out["taps"])
                    out = out["logits"]
                logits.append(out)
        if any(peer_features):
            extra["peer_features"] = peer_features
        return ops.stack([ops.cast(z, "float32") for z in logits], axis=1), extra

    def check_deploy_peer(self, deploy_peer):
        """Refuse a `deploy_peer` that is neither None nor a peer index."""
        if deploy_peer is not None and not (isinstance(deploy_peer, int) and 0 <= deploy_peer < self.num_peers):
            raise ValueError(f"deploy_peer must be None or a peer index in [0, {self.num_peers}), got {deploy_peer!r}.")

    def check_inputs(self, x):
        """Refuse arrays of another shape than the students take, before any compiled call: TensorFlow retraces a
        step with relaxed (None) shapes, which the in-step check cannot see."""
        if self.views is None and not is_dataset(x):
            _check_input_shapes(self.networks[0], split_inputs(x)[0])

    def _run(self, n, network, inputs, training):
        _check_input_shapes(network, inputs)
        student = self.networks[n]
        if network is student and id(student) in self._taps:
            model, names = self._taps[id(student)]
            out = model(inputs, training=training)
            taps = dict(zip(names, out["taps"]))
            if self.multi_branch:
                return {**out["output"], "taps": taps}
            return {"logits": out["output"], "taps": taps}
        return network(inputs, training=training)

    # ------------------------------------------------------------------ export
    def peer_model(self, networks, index):
        """Peer `index` of `networks` as a standalone image -> logits `keras.Model` of plain Keras layers."""
        from keras_okd.models import extract_branch

        if not 0 <= index < self.num_peers:
            raise ValueError(f"peer index {index} outside [0, {self.num_peers}).")
        if self.multi_branch:
            return extract_branch(networks[0], index, name=f"{networks[0].name}_branch{index}")
        return networks[index]

    def deployed_model(self, networks, deploy_peer=None, name="deployed"):
        """The ensemble of `networks`, or with `deploy_peer=k` peer k followed by a softmax (plain Keras)."""
        if deploy_peer is None:
            return self.ensemble_model(networks, name)
        peer = self.peer_model(networks, deploy_peer)
        inputs = keras.Input(shape=tuple(peer.inputs[0].shape[1:]), name=f"{name}_input")
        return keras.Model(inputs, keras.layers.Softmax(dtype="float32", name="probabilities")(peer(inputs)), name=name)

    def ensemble_model(self, networks, name="ensemble"):
        """A standalone `keras.Model` (plain Keras layers only) mapping inputs to the mean of the peers' softmax."""
        if self.multi_branch:  # the trunk once, then every branch (the zoo's sub-models: plain Keras layers only)
            from keras_okd.models.branches import TRUNK_NAME, branch_name

            network = networks[0]
            inputs = keras.Input(shape=tuple(network.inputs[0].shape[1:]), name=f"{name}_input")
            features = network.get_layer(TRUNK_NAME)(inputs)
            logits = [network.get_layer(branch_name(i))(features)[1] for i in range(self.num_peers)]
        else:
            peers = [self.peer_model(networks, i) for i in range(self.num_peers)]
            inputs = _inputs_like(peers[0], name)
            logits = [peer(inputs) for peer in peers]
        probs = [keras.layers.Softmax(dtype="float32", name=f"softmax_{i}")(z) for i, z in enumerate(logits)]
        # the output layer's name says what it gives: probabilities, where every peer_model gives logits
        return keras.Model(inputs, keras.layers.Average(name="probabilities")(probs), name=name)


def _inputs_like(model, name):
    """Fresh `keras.Input`s with the structure of `model`'s inputs (one tensor, a list, or a dict of named inputs)."""
    structure = model._inputs_struct if hasattr(model, "_inputs_struct") else model.inputs
    def fresh(t):
        return keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=f"{name}_{t.name}" if len(model.inputs) > 1
                           else f"{name}_input")
    return keras.tree.map_structure(fresh, structure)


def _tapped_model(network, names):
    """A functional model sharing `network`'s layers with outputs `{"output": network's output, "taps": [...]}`."""
    if not hasattr(network, "_inputs_struct") or not hasattr(network, "operations"):
        raise ValueError(
            f"Cannot read intermediate layers of {network.name!r} ({type(network).__name__}): features are taken "
            "by layer name from functional Keras models (keras.Model(inputs, outputs), keras.Sequential, the zoo). "
            "Build the student functionally, or return the features as extra outputs yourself."
        )
    nested = [n for n in names if "/" in n]
    if not nested:
        taps = [_layer_output(network, name) for name in names]
        return keras.Model(network._inputs_struct, {"output": network._outputs_struct, "taps": taps},
                           name=f"{network.name}_tapped")
    # Paths into nested functional sub-models: rebuild the outer graph with Keras's clone_model, reusing every layer
    # (same weights) and calling each tapped sub-model in place of the original, collecting its extra outputs.
    by_child = {}
    for name in nested:
        child, rest = name.split("/", 1)
        by_child.setdefault(child, []).append(rest)
    children = {}
    for child, rest in by_child.items():
        layer = _get_layer(network, child)
        children[id(layer)] = (_tapped_model(layer, rest), [f"{child}/{r}" for r in rest])
    collected = {}

    def call(layer, *args, **kwargs):
        if id(layer) in children:
            model, full = children[id(layer)]
            out = model(*args, **kwargs)
            collected.update(zip(full, out["taps"]))
            return out["output"]
        return layer(*args, **kwargs)

    rebuilt = keras.models.clone_model(network, clone_function=lambda layer: layer, call_function=call)
    top = {name: _layer_output(rebuilt, name) for name in names if "/" not in name}
    taps = [collected[name] if "/" in name else top[name] for name in names]
    return keras.Model(rebuilt._inputs_struct, {"output": rebuilt._outputs_struct, "taps": taps},
                       name=f"{network.name}_tapped")


def _check_input_shapes(network, inputs):
    """Refuse inputs whose known shape differs from the network's (a functional model on another image size may
    otherwise compute an answer, e.g. through global pooling)."""
    expected = [tuple(t.shape) for t in network.inputs]
    given = [tuple(getattr(t, "shape", ())) for t in keras.tree.flatten(inputs)]
    if len(given) != len(expected):
        return  # Keras reports a structure mismatch itself
    for got, want in zip(given, expected):
        if len(got) != len(want) or any(g is not None and w is not None and g != w
                                        for g, w in zip(got[1:], want[1:])):
            raise ValueError(
                f"{network.name!r} takes inputs of shape {want} (batch first) but was given {got}. Resize the "
                "inputs (or build the students for this shape)."
            )


def _get_layer(network, name):
    try:
        return network.get_layer(name)
    except ValueError:
        known = [layer.name for layer in network.layers]
        raise ValueError(
            f"{network.name!r} has no layer named {name!r}; its layers are {known}. Name the feature layers a "
            "knowledge part reads with layers=..., e.g. the zoo's stage outputs."
        ) from None


def _layer_output(network, name):
    layer = _get_layer(network, name)
    if len(layer._inbound_nodes) != 1:
        raise ValueError(
            f"Layer {name!r} of {network.name!r} is called {len(layer._inbound_nodes)} times, so its output is "
            "ambiguous; tap a layer that is used once."
        )
    return layer.output


def _single_output(student, i):
    try:
        output = student.output
    except (AttributeError, ValueError):
        output = None
    if output is None:  # a Sequential built from keras.Input has `outputs` but no `output`
        try:
            output = student.outputs[0] if len(student.outputs) == 1 else student.outputs
        except (AttributeError, ValueError, TypeError) as error:
            raise ValueError(
                f"students[{i}] ({student.name}) has no known output; build it first (use a functional model, or "
                "call it once on a batch)."
            ) from error
    if not keras.tree.is_nested(output):
        return output
    raise ValueError(
        f"students[{i}] ({student.name}) must output one tensor of logits (batch, classes); got "
        f"{keras.tree.map_structure(lambda t: tuple(t.shape), output)}."
    )


def _classes_of(tensor, what):
    shape = tuple(tensor.shape)
    if len(shape) != 2 or not isinstance(shape[-1], int):
        raise ValueError(f"{what} must output logits (batch, classes); got shape {shape}.")
    return shape[-1]


def _warn_if_probabilities(network, what):
    """Warn when a peer's last operation is a softmax (or sigmoid), or when its outputs on a probe batch are
    probabilities whatever made them (a `Lambda` softmax, a custom layer: every row non-negative and summing to one):
    the distiller expects logits."""
    try:
        outputs = keras.tree.flatten(network.output)
    except (AttributeError, ValueError):
        return
    for tensor in outputs:
        history = getattr(tensor, "_keras_history", None)
        layer = getattr(history, "operation", None)
        activation = getattr(layer, "activation", None)
        name = getattr(activation, "__name__", "") if activation is not None else ""
        if isinstance(layer, keras.layers.Softmax) or name in ("softmax", "sigmoid", "log_softmax"):
            message = (
                f"{what} ({network.name}) ends with {type(layer).__name__} {name or 'softmax'!s}: the distiller expects "
                "logits (no final activation); cross-entropy and KD on probabilities train much worse. Build the "
                "classifier with activation=None."
            )
            _logger.warning(message)
            warnings.warn(message, stacklevel=4)
            return
    if _outputs_are_probabilities(network):
        message = (f"{what} ({network.name}) outputs probabilities (on a probe batch every row is non-negative and "
                   "sums to one): the distiller expects logits (no final softmax); cross-entropy and KD on "
                   "probabilities train much worse. Remove the final softmax (a Lambda or custom layer too).")
        _logger.warning(message)
        warnings.warn(message, stacklevel=4)


def _outputs_are_probabilities(network, samples=4):
    """Whether `network`'s class outputs (its output, or the `logits` of a multi-branch student) on a batch of
    standard-normal inputs are probabilities: non-negative rows summing to one. False when it cannot be probed."""
    try:
        shapes = [tuple(x.shape) for x in keras.tree.flatten(network.inputs)]
    except (AttributeError, ValueError, TypeError):
        return False
    if not shapes or any(d is None for shape in shapes for d in shape[1:]):
        return False
    rng = np.random.default_rng(0)
    probe = [rng.standard_normal((samples,) + shape[1:]).astype("float32") for shape in shapes]
    with warnings.catch_warnings():  # the engines' numpy-conversion deprecation notes, not the user's concern
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            out = network(probe if len(probe) > 1 else probe[0], training=False)
        except Exception:  # a network that cannot be called on such a probe: the layer check above stands
            return False
        if isinstance(out, dict):
            out = out.get("logits", [])
        tensors = [np.asarray(keras.ops.convert_to_numpy(t), "float64") for t in keras.tree.flatten(out)]
    tensors = [t for t in tensors if t.ndim == 2 and t.shape[-1] > 1]
    return bool(tensors) and all(
        np.all(t >= 0) and np.allclose(t.sum(axis=-1), 1.0, atol=1e-3) for t in tensors)


def _make_names_unique(students):
    """Rename students whose model name repeats to `{name}_{i}`: nested in one Keras model (the ensemble, a saved
    distiller), names must be unique. Two students built by the same zoo function are the usual case."""
    seen = set()
    for i, student in enumerate(students):
        if student.name in seen:
            student.name = f"{student.name}_{i}"
        seen.add(student.name)
