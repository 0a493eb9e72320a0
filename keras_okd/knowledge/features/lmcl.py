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

- The pair weights. In the code, `w_n(a, b)` is the output of a weight network (`models/meta_network.py`: a linear
  projection of each slot's features, then `sigmoid(cos(.,.))` of the two projections), detached in the training step
  and trained every 50 steps by meta-optimisation (`losses/meta_optimizers.py`, `MetaSGD`, and the train script): two
  look-ahead SGD steps (momentum 0.9, weight decay) of the networks and heads on the weighted L-MCL loss and one on the
  cross-entropy, then the gradient of the cross-entropy after them with respect to the weight network, taken back
  through the three unrolled steps (second-order: Hessian-vector products), after which the networks are rolled back.
  That needs gradients of a look-ahead copy of every student's weights inside the step, which a knowledge part (one
  term of the distiller's single Keras gradient step, written in `keras.ops`, which has no gradient operation) cannot
  take. It is not built: this part weighs every layer pair by 1 (the factor above is 2). `layer_mutual_contrastive`
  takes per-sample weights, so the formula with weights is pinned by the tests.
- The layers. The code grows auxiliary branches (the remaining stages of the network, with a classifier of their
  own) on the outputs of the early stages, contrasts the branches' pooled features, trains their classifiers with
  cross-entropy, and adds an aggregator of the branches' logits that the final classifier learns from (KL). None of
  these is built: the part contrasts the named layers themselves, image features global-average-pooled before their
  head (default: the zoo's stages but the last, and the pooled features).
- The keys. As MCL's part: a memory of every sample's embedding per slot (momentum 0.5) and `num_negatives` keys drawn
  uniformly, positives the keys of the anchor's label, instead of the code's contrast within the batch (whose sampler
  puts two samples of each class in every batch); ICL puts the sample's own row of the other slot first among the
  keys and counts it as a positive (the CIFAR code's ICL leaves it out, as its VCL does).
"""

import keras
import numpy as np
from keras import ops

from keras_okd.knowledge.base import PartOutput
from keras_okd.knowledge.features.base import check_rank
from keras_okd.knowledge.features.mcl import MutualContrastive, soft_contrastive, supervised_contrastive
from keras_okd.losses import _batch_mean


def layer_mutual_contrastive(logits, positives, slot_peer, pair_weights=None, alpha=0.1, beta=0.1, gamma=1.0,
                             lam=1.0, kd_temperature=3.0, sample_weight=None, scale=1.0):
    """L-MCL's loss of every network (the module's `L_i`) from the contrastive scores of its slots.

    Args:
        logits: `(B, S, S, K + 1)` scores of anchor slot a against memory slot m, divided by tau: first the sample's
            own row of m, then the K drawn keys (`MutualContrastive.contrast`).
        positives: `(B, K)` 1 where a drawn key has the sample's label.
        slot_peer: the network of each of the S slots (ints `0 .. M-1`, every network at least once, M >= 2).
        pair_weights: `(B, S, S)` (or `(S, S)`) weight of each pair of slots per sample, the code's weight network's
            output (no gradient flows into it), or None for 1.
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
        pair_weights = ops.stop_gradient(ops.cast(pair_weights, "float32"))
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
        name: part name (default `"lmcl"`).

    Example:

    >>> part = LayerMutualContrastive(num_samples=1_000, layers=("stage_1", "pool"), num_negatives=256)
    >>> part.build_for_peers(2, 100, {"peer_features": [{"stage_1": (None, 32, 32, 16), "pool": (None, 64)}] * 2})
    >>> tuple(part.memory.shape), len(part.connectors)
    ((1000, 4, 128), 4)
    """

    label = "L-MCL"
    max_layers = None

    def __init__(self, num_samples, layers=("stage_1", "stage_2", "pool"), alpha=0.1, beta=0.1, gamma=1.0, lam=1.0,
                 temperature=0.1, kd_temperature=3.0, embedding_dim=128, num_negatives=8192, momentum=0.5,
                 memory_dtype="float32", seed=None, reduction="sum", name="lmcl", **kwargs):
        super().__init__(num_samples, layers=layers, alpha=alpha, beta=beta, gamma=gamma, lam=lam,
                         temperature=temperature, kd_temperature=kd_temperature, embedding_dim=embedding_dim,
                         num_negatives=num_negatives, momentum=momentum, memory_dtype=memory_dtype, seed=seed,
                         reduction=reduction, name=name, **kwargs)

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
        def width(shape):  # an image feature is pooled over its positions: its channels
            return int(shape[-1]) if len(shape) == 4 else int(np.prod(shape[1:]))

        layers = self.slots_per_peer
        self.connectors.set([self.embedding_head(i * layers + k, width(shapes[i][k]))
                             for i in range(self.num_peers) for k in range(layers)])

    def embed(self, slot, feature):
        """Slot `slot`'s embedding `(batch, embedding_dim)`: image features pooled, then its head, L2-normalised."""
        if len(feature.shape) == 4:
            feature = ops.mean(feature, axis=(1, 2))
        return super().embed(slot, feature)

    def targets(self, peer_logits, context):
        features = self.peer_features(context)
        layers = self.slots_per_peer
        anchors = ops.stack([self.embed(i * layers + k, features[i][k])
                             for i in range(self.num_peers) for k in range(layers)], axis=1)  # (B, S, d)
        logits, positives, state = self.contrast(anchors, context)
        scale = 1.0 / (self.num_peers - 1) if self.reduction == "mean" else 1.0
        slot_peer = [i for i in range(self.num_peers) for _ in range(layers)]
        losses = layer_mutual_contrastive(logits, positives, slot_peer, None, self.alpha, self.beta, self.gamma,
                                          self.lam, self.kd_temperature, context.get("sample_weight"), scale)
        return PartOutput(peer_losses=losses, state=state)
