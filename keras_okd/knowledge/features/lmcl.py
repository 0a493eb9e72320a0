"""Layer-wise mutual contrastive learning, L-MCL (Chuanguang Yang, Zhulin An, Helong Zhou, Fuzhen Zhuang, Yongjun Xu
and Qian Zhang, "Online Knowledge Distillation via Mutual Contrastive Learning for Visual Recognition", TPAMI 2023;
code: github.com/winycg/L-MCL).

MCL (`keras_okd.knowledge.features.mcl`) contrasts one representation per network; L-MCL contrasts several layers of
each network with every layer of every other network. Each (network, layer) pair is a slot with an embedding head of
its own (Linear-ReLU-Linear, L2-normalised) and a memory row per training sample. For an anchor slot `a` of network i
and a slot `b` of another network j, the authors' CIFAR code (`losses/cifar_sup_layer_mcl_meta_loss.py`) computes
MCL's four terms, here per sample n:

    l_n(a, b) = alpha VCL_a + gamma SoftVCL_{a<-b} + beta ICL_{a->b} + lambda SoftICL_{a->b}

(`supervised_contrastive` and `soft_contrastive` of the MCL module, over the same memory keys as MCL's part), weighs
them per sample by the weight `w_n(a, b)` of the layer pair, and sums over the pairs. Their loop visits both orders
of every pair of slots and each visit computes both directions, so `l(a, b)` enters with the factor
`w(a, b) + w(b, a)`. Network i's loss is

    L_i = c * sum_{a in i} sum_{b not in i} mean_n [(w_n(a, b) + w_n(b, a)) l_n(a, b)]

(`c = 1` as the code sums, `1 / (M - 1)` with `reduction="mean"`), `alpha = beta = 0.1`, `gamma = lambda = 1`,
`tau = 0.1`, `T = 3` (the code's defaults).

Where this part departs from the authors' code, and why:

- The pair weights (`weighting="meta"`; the default `"uniform"` weighs every pair 1, a factor 2 above). As in the
  code (`models/meta_network.py`), `w_n(a, b) = sigmoid(cos(P_a f_a, P_b f_b))`, with `P_a` a linear projection (128
  outputs) of slot a's pooled features (`pair_weights`). No gradient of the training step reaches the projections;
  every `meta_every` batches of an epoch (50; batch 0, 50, ...), after that batch's step and on that batch
  (`KnowledgePart.outer_step`), they take one step of their own: the networks and heads are copied and take
  `meta_steps` (2) look-ahead SGD steps (momentum 0.9, weight decay 5e-4, the training's current learning rate) on
  the weighted L-MCL loss and one on the networks' summed cross-entropy; the gradient of that cross-entropy after the
  three steps with respect to the projections, taken back through all three (second order,
  `keras_okd.backend.unrolled_gradient`), moves them by Nesterov SGD (momentum 0.9, weight decay 5e-4, the same
  learning rate); the networks keep their weights (the code's roll-back). Departures: the look-ahead starts from a
  zero momentum buffer every time (the code's roll-back restores an optimizer whose buffers it re-creates each
  round: the same), the contrast in the look-ahead uses this part's memory and keys, read only (the memory is not
  written), and the batch is read again from the training data (`keras_okd.distiller.inputs.batch_again`: the same
  batch from a `keras_okd.data.pipeline` dataset or a `keras.utils.PyDataset`; for another dataset the batch at the
  same position of a new pass; for arrays a batch drawn by `(epoch, batch)`). The step runs on one device.
- The layers. The code grows auxiliary branches on the outputs of the early stages (new copies of the network's
  later stages, its pooling and a classifier of their own), contrasts the branches' pooled features, trains their
  classifiers with cross-entropy, and adds an aggregator per network: a softmax over the stages, from the stages'
  concatenated pooled features (Linear-ReLU-Linear), weighs the stages' logits; the aggregated logits learn from the
  labels, and every network's final logits from every network's aggregated logits (KL at T, times T^2, the
  aggregated side detached). `auxiliary_branches=` builds all of it (`auxiliary_classification`; the branches from
  `keras_okd.models.auxiliary_branch`, made by the `lmcl` preset with `auxiliary=True`); their terms are the part's
  extra loss `auxiliary`, added with weight 1 as in the code. Without them (the default) the part contrasts the named
  layers themselves, image features global-average-pooled before their head. Departure: the branches' layers are
  initialised as the network's own (the zoo: He-normal over the fan-in for convolutions, Glorot-uniform for the
  classifier's kernel), where the code draws the branches' convolutions from normal(0, sqrt(2 / fan-out)) and keeps
  PyTorch's default for the classifier's kernel.
- The keys. As MCL's part: a memory of every sample's embedding per slot (momentum 0.5) and `num_negatives` keys drawn
  uniformly, positives the keys of the anchor's label, instead of the code's contrast within the batch (whose sampler
  puts two samples of each class in every batch); ICL puts the sample's own row of the other slot first among the
  keys and counts it as a positive (the CIFAR code's ICL leaves it out, as its VCL does).
"""

from functools import partial

import keras
import numpy as np
from keras import ops

from keras_okd import backend
from keras_okd.knowledge.base import PartOutput
from keras_okd.knowledge.features.base import Connectors, check_rank, safe_l2_normalize
from keras_okd.knowledge.features.mcl import MutualContrastive, soft_contrastive, supervised_contrastive
from keras_okd.losses import _batch_mean, pairwise_kd, peer_cross_entropy, soften


def layer_mutual_contrastive(logits, positives, slot_peer, pair_weights=None, alpha=0.1, beta=0.1, gamma=1.0,
                             lam=1.0, kd_temperature=3.0, sample_weight=None, scale=1.0):
    """L-MCL's loss of every network (the module's `L_i`) from the contrastive scores of its slots.

    Args:
        logits: `(B, S, S, K + 1)` scores of anchor slot a against memory slot m, divided by tau: first the sample's
            own row of m, then the K drawn keys (`MutualContrastive.contrast`).
        positives: `(B, K)` 1 where a drawn key has the sample's label.
        slot_peer: the network of each of the S slots (ints `0 .. M-1`, every network at least once, M >= 2).
        pair_weights: `(B, S, S)` (or `(S, S)`) weight of each pair of slots per sample (`pair_weights`), or None
            for 1. Gradients flow into it: the training step passes it detached, the meta step does not.
        alpha, beta, gamma, lam: the weights of VCL, ICL, soft VCL and soft ICL.
        kd_temperature: T of the soft terms.
        sample_weight: `(B,)` or None.
        scale: c, the factor on every network's sum (1 / (M - 1) averages over the other networks).

    Returns:
        `(M,)` float32.

    Raises:
        ValueError: `slot_peer` does not match the logits' slots or names fewer than two networks; `pair_weights` is
            not `(..., S, S)`.

    Example:

    >>> import numpy as np, keras
    >>> logits = np.zeros((2, 2, 2, 4), "float32")     # 2 samples, 2 slots (one per network), 3 keys
    >>> positives = np.array([[1, 0, 0], [0, 1, 1]], "float32")
    >>> loss = layer_mutual_contrastive(logits, positives, [0, 1], alpha=1.0, beta=0.0, gamma=0.0, lam=0.0)
    >>> np.round(keras.ops.convert_to_numpy(loss), 4)   # 2 * alpha * log 3: uniform scores, weight 1 + 1
    array([2.1972, 2.1972], dtype=float32)
    """
    slot_peer = [int(p) for p in slot_peer]
    slots = len(slot_peer)
    if tuple(logits.shape[1:3]) != (slots, slots):
        raise ValueError(f"layer_mutual_contrastive: slot_peer names {slots} slots but the logits have shape "
                         f"{tuple(logits.shape)} (batch, slots, slots, keys + 1); give one network index per slot.")
    peers = sorted(set(slot_peer))
    if len(peers) < 2 or peers != list(range(len(peers))):
        raise ValueError(f"layer_mutual_contrastive: slot_peer must name networks 0 .. M-1 (M >= 2), each at least "
                         f"once; got {slot_peer}.")
    if pair_weights is not None:
        pair_weights = ops.cast(pair_weights, "float32")
        if len(pair_weights.shape) not in (2, 3) or tuple(pair_weights.shape[-2:]) != (slots, slots):
            raise ValueError(f"layer_mutual_contrastive: pair_weights must be (batch, {slots}, {slots}) or "
                             f"({slots}, {slots}), one weight per pair of slots; got shape "
                             f"{tuple(pair_weights.shape)}.")
    logits = ops.cast(logits, "float32")
    positives = ops.cast(positives, "float32")
    key_positives = ops.concatenate([ops.ones_like(positives[:, :1]), positives], axis=-1)  # own row, then the keys
    drawn = logits[..., 1:]
    vcl = [supervised_contrastive(drawn[:, a, a], positives) for a in range(slots)]
    terms = [0.0] * len(peers)
    for a in range(slots):
        for b in range(slots):
            if slot_peer[b] == slot_peer[a]:
                continue
            per_sample = (alpha * vcl[a]
                          + gamma * soft_contrastive(drawn[:, a, a], drawn[:, b, b], kd_temperature)
                          + beta * supervised_contrastive(logits[:, a, b], key_positives)
                          + lam * soft_contrastive(logits[:, a, b], logits[:, b, a], kd_temperature))
            weight = 2.0 if pair_weights is None else pair_weights[..., a, b] + pair_weights[..., b, a]
            terms[slot_peer[a]] = terms[slot_peer[a]] + _batch_mean(weight * per_sample, sample_weight)
    return ops.stack(terms) * scale


def auxiliary_classification(labels, stage_logits, stage_weights, kd_temperature=3.0, sample_weight=None):
    """L-MCL's classification terms of the auxiliary branches and the aggregator, per network (the authors'
    `main_layer_mcl_cifar_meta.py`): with `z_is` the logits of stage s of network i (its branches', then its own),
    `a_i = sum_s w_is z_is` the aggregated logits,

        A_i = sum_{s < S} CE(z_is) + CE(a_i) + T^2 sum_j KL(softmax(a_j / T) || softmax(z_iS / T)),

    `a_j` detached in the KL (the network's own final cross-entropy `CE(z_iS)` is the distiller's, not here).

    Args:
        labels: `(B,)` integers.
        stage_logits: `(B, M, S, C)`, the last stage each network's own logits.
        stage_weights: `(B, M, S)`, the aggregator's weights of each network's stages (a softmax over S).
        kd_temperature: T.
        sample_weight: `(B,)` or None.

    Returns:
        `(M,)` float32.

    Example:

    >>> import numpy as np, keras
    >>> z = np.zeros((1, 2, 2, 4), "float32")                     # 1 sample, 2 networks, 2 stages, 4 classes
    >>> w = np.full((1, 2, 2), 0.5, "float32")
    >>> np.round(keras.ops.convert_to_numpy(auxiliary_classification(np.array([0]), z, w)), 4)   # 2 ln 4, KL 0
    array([2.7726, 2.7726], dtype=float32)
    """
    stage_logits = ops.cast(stage_logits, "float32")
    _, peers, stages, classes = tuple(stage_logits.shape)
    branches = ops.reshape(stage_logits[:, :, :-1], (-1, peers * (stages - 1), classes))
    branch_ce = ops.sum(ops.reshape(peer_cross_entropy(labels, branches, sample_weight), (peers, stages - 1)), axis=1)
    aggregated = ops.einsum("bms,bmsc->bmc", ops.cast(stage_weights, "float32"), stage_logits)
    kd = pairwise_kd(soften(aggregated, kd_temperature), stage_logits[:, :, -1], kd_temperature,
                     ops.ones((peers, peers)), sample_weight)
    return branch_ce + peer_cross_entropy(labels, aggregated, sample_weight) + kd


def pair_weights(projections):
    """The weight of every pair of slots per sample, `sigmoid(cos(p_a, p_b))` (the code's `LossWeightNetwork`).

    Args:
        projections: `(B, S, P)` each slot's projected features.

    Returns:
        `(B, S, S)` float32 in (0, 1), symmetric in the two slots.

    Example:

    >>> import numpy as np, keras
    >>> p = np.array([[[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]], "float32")     # one sample, 3 slots
    >>> np.round(keras.ops.convert_to_numpy(pair_weights(p))[0], 4)        # sigmoid(1), sigmoid(0), sigmoid(-1)
    array([[0.7311, 0.5   , 0.2689],
           [0.5   , 0.7311, 0.5   ],
           [0.2689, 0.5   , 0.7311]], dtype=float32)
    """
    unit = safe_l2_normalize(ops.cast(projections, "float32"), axis=-1)
    return ops.sigmoid(ops.einsum("bap,bcp->bac", unit, unit))


@keras.saving.register_keras_serializable(package="keras_okd")
class LayerMutualContrastive(MutualContrastive):
    """L-MCL's layer-wise contrastive terms (see the module) over one embedding head and one memory slot per
    (network, layer).

    State: as MCL's part, with `memory` `(num_samples, peers x layers, embedding_dim)` (slot `i * layers + k` holds
    network i's layer k) and `labels` `(num_samples,)`. A step reads the batch's rows and `batch x num_negatives`
    drawn rows of every slot and writes the batch's rows back (`keras_okd.backend.gather_rows` / `scatter_rows`,
    O(batch x keys x slots x dim)), only in training and only when the step's loss is finite.

    Args:
        num_samples: N, the training set's size.
        layers: the layers contrasted, the same number for every network (by position: slot k of every network);
            image features `(batch, h, w, c)` are global-average-pooled before their head, pooled features used as
            they are.
        alpha, beta, gamma, lam, temperature, kd_temperature, embedding_dim, num_negatives, momentum, memory_dtype,
            seed, reduction: as `MutualContrastive`'s, with the same defaults; each slot has the head, the memory
            rows and the drawn keys that a network has in MCL.
        weighting: `"uniform"` (every pair weighs 1) or `"meta"` (the paper's meta-optimised pair weights, see the
            module). The default stays `"uniform"`, what this part computed before `"meta"` existed, so that the
            ledger's L-MCL records rerun as they ran.
        meta_every: with `"meta"`, the meta step runs after batches 0, `meta_every`, `2 meta_every`, ... of every
            epoch (50).
        meta_steps: look-ahead steps on the L-MCL loss before the one on the cross-entropy (2).
        meta_momentum, meta_weight_decay: SGD momentum and weight decay of the look-ahead and of the projections'
            own step (0.9, 5e-4).
        meta_learning_rate: their learning rate; None: the training optimizer's current one (the code's).
        projection_dim: outputs of each slot's projection (128).
        auxiliary_branches: None (default), or one list per network of its auxiliary branches, one per layer but the
            last, in the order of `layers` (`keras.Model`s from that layer's output to `[pooled features, logits]`,
            e.g. `keras_okd.models.auxiliary_branch`): the slot of such a layer contrasts the branch's pooled
            features; the branches' logits, the aggregators (one per network, built here) and their terms are the
            part's extra loss `"auxiliary"` (`auxiliary_classification`, see the module).
        name: part name (default `"lmcl"`).

    Example:

    >>> part = LayerMutualContrastive(num_samples=1_000, layers=("stage_1", "pool"), num_negatives=256)
    >>> part.build_for_peers(2, 100, {"peer_features": [{"stage_1": (None, 32, 32, 16), "pool": (None, 64)}] * 2})
    >>> tuple(part.memory.shape), len(part.connectors)
    ((1000, 4, 128), 4)

    With auxiliary branches (what `keras_okd.methods.lmcl(..., auxiliary=True)` builds):

    >>> from keras_okd import models
    >>> nets = [models.get("resnet20", num_classes=100) for _ in range(2)]
    >>> branches = [[models.auxiliary_branch(net, "stage_1", name=f"aux_{i}")] for i, net in enumerate(nets)]
    >>> part = LayerMutualContrastive(1_000, layers=("stage_1", "pool"), num_negatives=256,
    ...                               auxiliary_branches=branches)
    >>> part.build_for_peers(2, 100, {"peer_features": [{"stage_1": (None, 32, 32, 16), "pool": (None, 64)}] * 2})
    >>> part.loss_names, len(part.aggregators)
    (('auxiliary',), 2)
    """

    label = "L-MCL"
    max_layers = None
    WEIGHTINGS = ("meta", "uniform")

    def __init__(self, num_samples, layers=("stage_1", "stage_2", "pool"), alpha=0.1, beta=0.1, gamma=1.0, lam=1.0,
                 temperature=0.1, kd_temperature=3.0, embedding_dim=128, num_negatives=8192, momentum=0.5,
                 memory_dtype="float32", seed=None, reduction="sum", weighting="uniform", meta_every=50, meta_steps=2,
                 meta_momentum=0.9, meta_weight_decay=5e-4, meta_learning_rate=None, projection_dim=128,
                 auxiliary_branches=None, name="lmcl", **kwargs):
        super().__init__(num_samples, layers=layers, alpha=alpha, beta=beta, gamma=gamma, lam=lam,
                         temperature=temperature, kd_temperature=kd_temperature, embedding_dim=embedding_dim,
                         num_negatives=num_negatives, momentum=momentum, memory_dtype=memory_dtype, seed=seed,
                         reduction=reduction, name=name, **kwargs)
        if weighting not in self.WEIGHTINGS:
            raise ValueError(f"LayerMutualContrastive: weighting must be one of {self.WEIGHTINGS}, got "
                             f"{weighting!r}.")
        for arg, value in (("meta_every", meta_every), ("meta_steps", meta_steps), ("projection_dim", projection_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if arg == "meta_steps" else 1):
                raise ValueError(f"LayerMutualContrastive: {arg} must be an integer >= "
                                 f"{0 if arg == 'meta_steps' else 1}, got {value!r}.")
        for arg, value in (("meta_momentum", meta_momentum), ("meta_weight_decay", meta_weight_decay)):
            if not float(value) >= 0.0:
                raise ValueError(f"LayerMutualContrastive: {arg} must be >= 0, got {value!r}.")
        if meta_learning_rate is not None and not float(meta_learning_rate) > 0.0:
            raise ValueError(f"LayerMutualContrastive: meta_learning_rate must be > 0 or None (the training "
                             f"optimizer's), got {meta_learning_rate!r}.")
        self.weighting = weighting
        self.meta_every, self.meta_steps, self.projection_dim = meta_every, meta_steps, projection_dim
        self.meta_momentum, self.meta_weight_decay = float(meta_momentum), float(meta_weight_decay)
        self.meta_learning_rate = None if meta_learning_rate is None else float(meta_learning_rate)
        self.outer_every = meta_every if weighting == "meta" else None
        self._in_meta_step = False
        self.auxiliary = Connectors(name=f"{name}_auxiliary_branches")  # tracked now: the branches exist already
        if auxiliary_branches is not None:
            rows = [list(row) for row in auxiliary_branches]
            if not rows or len({len(row) for row in rows}) != 1 or not rows[0]:
                raise ValueError(f"LayerMutualContrastive: auxiliary_branches needs one list per network, each with "
                                 f"one branch per layer but the last (the same number); got {len(rows)} lists of "
                                 f"{[len(row) for row in rows]} branches.")
            rows = [[keras.saving.deserialize_keras_object(b) if isinstance(b, dict) else b for b in row]
                    for row in rows]
            bad = [b for row in rows for b in row if not isinstance(b, keras.Model)]
            if bad:
                raise ValueError(f"LayerMutualContrastive: every auxiliary branch must be a keras.Model (layer output "
                                 f"-> [pooled features, logits], keras_okd.models.auxiliary_branch); got {bad[0]!r}.")
            self.auxiliary.set([b for row in rows for b in row])
            self.branches_per_peer = len(rows[0])
            self.loss_names = ("auxiliary",)

    @classmethod
    def default_layers(cls, stages, pool):
        return (*stages[:-1], pool)  # the early stages (where the authors' code grows its branches), the pooled ones

    @property
    def slots_per_peer(self):
        """The layers contrasted per network (one memory slot and one head each)."""
        return len(self.layers_for_peer(0))

    def check_pair(self, own_shape, target_shape, what):
        check_rank(own_shape, (2, 4), what, "L-MCL")
        check_rank(target_shape, (2, 4), what, "L-MCL")

    def build_connectors(self, shapes):
        layers = self.slots_per_peer
        if self.auxiliary.items:
            self._check_branches(shapes)
        widths = [self._slot_width(i, k, shapes[i][k]) for i in range(self.num_peers) for k in range(layers)]
        self.connectors.set([self.embedding_head(slot, widths[slot]) for slot in range(len(widths))])
        if self.auxiliary.items:
            aggregators = []
            for i in range(self.num_peers):  # the code's Aggregator: Linear(S F, F)-ReLU-Linear(F, S), softmax
                own = widths[i * layers:(i + 1) * layers]
                aggregator = keras.Sequential([keras.layers.Dense(own[-1], activation="relu", dtype="float32"),
                                               keras.layers.Dense(layers, dtype="float32"),
                                               keras.layers.Softmax(dtype="float32")], name=f"aggregator_{i}")
                aggregator.build((None, sum(own)))
                aggregators.append(aggregator)
            self.aggregators.set(aggregators)
        if self.weighting == "meta":
            dense = []
            for slot in range(self.num_peers * layers):
                projection = keras.layers.Dense(self.projection_dim, dtype="float32", name=f"projection_{slot}")
                projection.build((None, widths[slot]))
                dense.append(projection)
            self.projections.set(dense)
            self.projections.trainable = False  # trained by the meta step alone, never by the training step
            velocity = self.projection_velocity
            velocity.items = [velocity.add_weight(shape=v.shape, initializer="zeros", trainable=False,
                                                  name=f"velocity_{n}")
                              for n, v in enumerate(self.projections.weights)]
            velocity.built = True

    def _slot_width(self, peer, position, shape):
        """The width of slot (peer, position)'s pooled features: its auxiliary branch's, else the layer's channels
        (image features, pooled over their positions) or size."""
        if self.auxiliary.items and position < self.slots_per_peer - 1:
            return int(self.auxiliary[peer * self.branches_per_peer + position].outputs[0].shape[-1])
        return int(shape[-1]) if len(shape) == 4 else int(np.prod(shape[1:]))

    def _check_branches(self, shapes):
        """Refuse auxiliary branches that do not fit the networks: their number, input shapes and classes."""
        layers = self.slots_per_peer
        if len(self.auxiliary) != self.num_peers * (layers - 1) or self.branches_per_peer != layers - 1:
            raise ValueError(f"{self.name}: auxiliary_branches has {len(self.auxiliary) // self.branches_per_peer} "
                             f"lists of {self.branches_per_peer} branches; {self.num_peers} networks contrasting "
                             f"{layers} layers need {self.num_peers} lists of {layers - 1} (one per layer but the "
                             "last).")
        for i in range(self.num_peers):
            for k, layer in enumerate(self.layers_for_peer(i)[:-1]):
                branch = self.auxiliary[i * (layers - 1) + k]
                expected, got = tuple(shapes[i][k][1:]), tuple(branch.inputs[0].shape[1:])
                classes = int(branch.outputs[-1].shape[-1])
                if expected != got or classes != self.num_classes:
                    raise ValueError(f"{self.name}: the auxiliary branch {branch.name!r} of network {i} takes "
                                     f"{got} and gives {classes} logits, but layer {layer!r} gives {expected} and "
                                     f"the networks {self.num_classes} classes; build it on that network's layer "
                                     "(keras_okd.models.auxiliary_branch(network, layer)).")

    def build(self, input_shape):
        super().build(input_shape)
        if self.weighting == "meta":  # filled in build_connectors (the containers exist before Keras locks the part)
            self.projections = Connectors(name=f"{self.name}_pair_weights")
            self.projection_velocity = Connectors(name=f"{self.name}_pair_weights_velocity")
        if self.auxiliary.items:
            self.aggregators = Connectors(name=f"{self.name}_aggregators")

    def embed(self, slot, feature):
        """Slot `slot`'s embedding `(batch, embedding_dim)`: image features pooled, then its head, L2-normalised."""
        return super().embed(slot, _pooled(feature))

    def slot_features(self, peer_logits, context):
        """The pooled features of every slot (a list, network-major) and, with auxiliary branches, every network's
        stages' logits `(B, M, S, C)` (its branches', then its own); None without them."""
        features = self.peer_features(context)
        layers, training = self.slots_per_peer, bool(context.get("training", False))
        if not self.auxiliary.items:
            return [_pooled(features[i][k]) for i in range(self.num_peers) for k in range(layers)], None
        pooled, stages = [], []
        for i in range(self.num_peers):
            logits = []
            for k in range(layers - 1):
                branch_features, branch_logits = self.auxiliary[i * (layers - 1) + k](features[i][k],
                                                                                      training=training)
                pooled.append(ops.cast(branch_features, "float32"))
                logits.append(ops.cast(branch_logits, "float32"))
            pooled.append(_pooled(features[i][-1]))
            stages.append(ops.stack(logits + [ops.cast(peer_logits[:, i], "float32")], axis=1))
        return pooled, ops.stack(stages, axis=1)

    def stage_weights(self, pooled):
        """`(B, M, S)` the aggregators' weights of every network's stages, from its slots' pooled features."""
        layers = self.slots_per_peer
        return ops.stack([self.aggregators[i](ops.concatenate(pooled[i * layers:(i + 1) * layers], axis=-1))
                          for i in range(self.num_peers)], axis=1)

    def weights_of_pairs(self, pooled):
        """`(B, S, S)` the pair weights of this batch (`pair_weights` of the slots' projections of their pooled
        features); detached except in the meta step."""
        weights = pair_weights(ops.stack([self.projections[slot](f) for slot, f in enumerate(pooled)], axis=1))
        return weights if self._in_meta_step else ops.stop_gradient(weights)

    def targets(self, peer_logits, context):
        pooled, stages = self.slot_features(peer_logits, context)
        anchors = ops.stack([self.embed(slot, f) for slot, f in enumerate(pooled)], axis=1)  # (B, S, d)
        logits, positives, state = self.contrast(anchors, context)
        scale = 1.0 / (self.num_peers - 1) if self.reduction == "mean" else 1.0
        slot_peer = [i for i in range(self.num_peers) for _ in range(self.slots_per_peer)]
        weights = self.weights_of_pairs(pooled) if self.weighting == "meta" else None
        losses = layer_mutual_contrastive(logits, positives, slot_peer, weights, self.alpha, self.beta, self.gamma,
                                          self.lam, self.kd_temperature, context.get("sample_weight"), scale)
        extra = {}
        if stages is not None:
            extra["auxiliary"] = ops.sum(auxiliary_classification(context["labels"], stages,
                                                                  self.stage_weights(pooled), self.kd_temperature,
                                                                  context.get("sample_weight")))
        return PartOutput(peer_losses=losses, losses=extra, state=state)

    def outer_step(self, distiller, inputs, labels):
        """The meta step of the pair weights on one training batch (see the module): `inputs` as the training step
        sees them (with `"index"`), `labels` `(B,)` integers. Changes the projections and their momentum only."""
        backend.attach_state(distiller)
        phi_vars = list(self.projections.weights)
        lr = self.meta_learning_rate
        if lr is None:
            lr = ops.convert_to_numpy(distiller.optimizer.learning_rate)
        lr = ops.convert_to_tensor(np.asarray(lr, "float32"))
        if getattr(self, "_meta_gradient", (None,))[0] != id(distiller):  # compiled once per distiller
            self._meta_gradient = (id(distiller), backend.compiled(partial(self._look_ahead, distiller)))
        grads = self._meta_gradient[1]([ops.convert_to_tensor(v) for v in distiller.trainable_variables],
                                       [ops.convert_to_tensor(v) for v in distiller.non_trainable_variables],
                                       keras.tree.map_structure(ops.convert_to_tensor, inputs),
                                       ops.convert_to_tensor(labels), lr)
        for p, v, g in zip(phi_vars, self.projection_velocity.items, grads):  # Nesterov SGD with weight decay
            g = ops.convert_to_tensor(g) + self.meta_weight_decay * p.value   # (the code's weight optimizer)
            v.assign(self.meta_momentum * v.value + g)
            p.assign(p.value - lr * (g + self.meta_momentum * v.value))

    def _look_ahead(self, distiller, theta, rest, inputs, labels, lr):
        """The gradient of the cross-entropy after the look-ahead with respect to the projections (a pure function of
        the values of every variable of `distiller`: trainable `theta`, non-trainable `rest`)."""
        theta_vars, rest_vars = list(distiller.trainable_variables), list(distiller.non_trainable_variables)
        phi_at = [next(n for n, r in enumerate(rest_vars) if r is p) for p in self.projections.weights]

        def scope(theta, phi):  # every variable read as a value: the look-ahead's weights, the projections phi
            values = list(rest)
            for n, value in zip(phi_at, phi):
                values[n] = value
            return keras.StatelessScope(state_mapping=list(zip(theta_vars, theta)) + list(zip(rest_vars, values)))

        def contrastive(theta, phi):  # the weighted L-MCL loss (the code's inner objective)
            with scope(theta, phi):
                y_pred = distiller(inputs, training=True)
                context = {"index": inputs["index"], "labels": labels, "training": True,
                           "peer_features": y_pred["peer_features"]}
                return self.weight * ops.sum(self.targets(y_pred["peer_logits"], context).peer_losses)

        def cross_entropy(theta, phi):  # the summed cross-entropy of every stage of every network (the code's outer
            # objective)
            with scope(theta, phi):
                y_pred = distiller(inputs, training=True)
                logits = y_pred["peer_logits"]
                if self.auxiliary.items:
                    _, stages = self.slot_features(logits, {"training": True, "peer_features": y_pred["peer_features"]})
                    logits = ops.reshape(stages, (-1, stages.shape[1] * stages.shape[2], stages.shape[3]))
                return ops.sum(peer_cross_entropy(labels, logits))

        def sgd(theta, grads, momenta, step):
            momenta = momenta or [ops.zeros_like(t) for t in theta]
            momenta = [self.meta_momentum * m + g + self.meta_weight_decay * t
                       for t, g, m in zip(theta, grads, momenta)]
            return [t - lr * m for t, m in zip(theta, momenta)], momenta

        self._in_meta_step = True  # the pair weights are not detached while this is traced
        try:
            return backend.unrolled_gradient([contrastive] * self.meta_steps + [cross_entropy], cross_entropy, theta,
                                             [rest[n] for n in phi_at], sgd)
        finally:
            self._in_meta_step = False

    def _branch_configs(self):
        """The auxiliary branches' configs, one list per network (None without branches)."""
        if not self.auxiliary.items:
            return None
        per = self.branches_per_peer
        return [[keras.saving.serialize_keras_object(b) for b in self.auxiliary.items[start:start + per]]
                for start in range(0, len(self.auxiliary), per)]

    def get_config(self):
        config = super().get_config()
        config.update({"weighting": self.weighting, "meta_every": self.meta_every, "meta_steps": self.meta_steps,
                       "meta_momentum": self.meta_momentum, "meta_weight_decay": self.meta_weight_decay,
                       "meta_learning_rate": self.meta_learning_rate, "projection_dim": self.projection_dim,
                       "auxiliary_branches": self._branch_configs()})
        return config


def _pooled(feature):
    """Image features `(B, h, w, c)` averaged over their positions; pooled features as they are."""
    return ops.mean(feature, axis=(1, 2)) if len(feature.shape) == 4 else feature
