"""Mutual contrastive learning (Chuanguang Yang, Zhulin An, Linhang Cai and Yongjun Xu, "Mutual Contrastive Learning
for Visual Representation Learning", AAAI 2022; code: github.com/winycg/MCL).

Every network embeds its representation with a head of its own (Linear-ReLU-Linear, then L2 normalisation,
`v^a` in R^d) and keeps, for every training sample, a memory row of its embedding (momentum-updated, as CRD's
memory). With cosine similarities `s = v . u / tau` against memory rows, the contrastive distribution of anchor
`v^a` over a set of keys is `softmax(s)`, and four terms are built from it:

- VCL, vanilla contrastive learning (the paper's L_VCL): anchor `v^a` against network a's own memory;
- ICL, interactive contrastive learning (L_ICL^{a->b}): anchor `v^a` against network b's memory, the positive set
  including b's memory row of the anchor's own sample;
- Soft VCL (mutual mimicry of the VCL distributions): `T^2 KL(softmax(s_VCL^b / T) || softmax(s_VCL^a / T))`, b's
  distribution detached, over the same keys;
- Soft ICL: `T^2 KL(softmax(s^{b->a} / T) || softmax(s^{a->b} / T))`: a's distribution over b's memory mimics b's
  over a's memory (detached).

Supervised positives (the authors' supervised code, following SupCon): every key of the anchor's class is a positive,
and a term is `-(1 / |P|) sum_{p in P} log softmax(s)_p` (`supervised_contrastive`). Network a's loss is
`alpha VCL^a + gamma sum_{b != a} SoftVCL^{a<-b} + beta sum_{b != a} ICL^{a->b} + lambda sum_{b != a} SoftICL^{a->b}`
(the authors' code sums over the other networks; `reduction="mean"` averages), `alpha = beta = 0.1`,
`gamma = lambda = 1`, `tau = 0.1`, `T = 3` (their CIFAR scripts).

Where the authors' code departs from this part, and the choice made here:

- Their CIFAR-100 code (the paper's CIFAR table) contrasts the embeddings of the current batch (in-batch SupCon,
  positives = same-label samples of the batch), without a memory. Their ImageNet code keeps a memory of every
  sample's embedding per network, momentum 0.5, and per anchor draws `pos_k = 1` sample of its class and
  `neg_k = 8192` of other classes (class-aware sampling of the data loader, which needs every label in advance).
  This part keeps the ImageNet code's memory on every dataset and draws `num_negatives` keys uniformly over the
  training set; the memory also stores each row's label (written with its embedding), and a drawn key whose stored
  label is the anchor's is a positive. The number of positives per anchor is therefore random (about K / classes)
  rather than 1, and unvisited rows (label -1) are always negatives. An anchor with no positive among its keys
  contributes 0 to VCL (the ICL positive set always holds the other network's row of the sample itself).
- The ImageNet code leaves the sample's own row out of VCL's keys (its positive there is the drawn same-class
  sample) and puts it first in ICL's keys; so does this part.
- The soft terms use the code's `T^2`-scaled KL at `T = 3`; without an index (validation data) the ICL positive is
  the other network's current embedding, nothing is written, and one set of keys from a fixed seed serves the batch
  (as CRD's part).
"""

import keras
import numpy as np
from keras import ops

from keras_okd.backend import gather_rows, scatter_rows
from keras_okd.knowledge.base import PartOutput
from keras_okd.knowledge.features.crd import ContrastiveRepresentation, momentum_update
from keras_okd.losses import _batch_mean


def supervised_contrastive(logits, positives):
    """Per-sample supervised contrastive loss: `-(1 / |P|) sum_{p in P} log softmax(logits)_p`.

    Args:
        logits: `(..., K)` similarities over the keys, already divided by the contrastive temperature.
        positives: `(..., K)` (or broadcastable) 1 where a key is a positive, 0 elsewhere.

    Returns:
        `logits.shape[:-1]` float32; 0 where there is no positive.

    Example:

    >>> import numpy as np, keras
    >>> loss = supervised_contrastive(np.log(np.array([[0.5, 0.25, 0.25]], "float32")), np.array([[1, 1, 0]]))
    >>> round(float(keras.ops.convert_to_numpy(loss)[0]), 4)   # -(log 0.5 + log 0.25) / 2
    1.0397
    """
    logits = ops.cast(logits, "float32")
    positives = ops.cast(positives, "float32")
    log_prob = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
    count = ops.sum(positives * ops.ones_like(log_prob), axis=-1)
    return -ops.sum(positives * log_prob, axis=-1) / ops.maximum(count, 1.0)


def soft_contrastive(student, teacher, temperature):
    """Per-sample `T^2 KL(softmax(teacher / T) || softmax(student / T))`, the teacher detached: the mimicry of one
    contrastive distribution by another (MCL's soft VCL and soft ICL).

    Args:
        student: `(..., K)` the learning network's logits over the keys.
        teacher: `(..., K)` the other network's logits over the same keys.
        temperature: T.

    Returns:
        `student.shape[:-1]` float32.

    Example:

    >>> import numpy as np, keras
    >>> same = np.array([[0.3, -1.0, 2.0]], "float32")
    >>> float(keras.ops.convert_to_numpy(soft_contrastive(same, same, 3.0))[0])
    0.0
    """
    t = ops.stop_gradient(ops.cast(teacher, "float32")) / temperature
    s = ops.cast(student, "float32") / temperature
    log_t = t - ops.logsumexp(t, axis=-1, keepdims=True)
    log_s = s - ops.logsumexp(s, axis=-1, keepdims=True)
    return temperature * temperature * ops.sum(ops.exp(log_t) * (log_t - log_s), axis=-1)


@keras.saving.register_keras_serializable(package="keras_okd")
class MutualContrastive(ContrastiveRepresentation):
    """MCL's four contrastive terms (see the module) over embedding heads and a per-sample memory of embeddings.

    State: `memory` `(num_samples, peers, embedding_dim)` as CRD's part (U(-a, a) initialisation, momentum update
    `normalize(m * old + (1 - m) * new)`), and `labels` int32 `(num_samples,)`, each row's label (-1 until the row is
    first written). A step reads the batch's rows and `batch x num_negatives` drawn rows, and writes the batch's rows
    back (`keras_okd.backend.gather_rows` / `scatter_rows`: O(batch x keys x peers x dim) whatever `num_samples` is,
    every replica writing every replica's rows); only in training and only when the step's loss is finite. A batch
    must not repeat an index. The keys' generator is saved with the weights, so a resumed run draws the keys an
    uninterrupted run would.

    Args:
        num_samples: N, the training set's size.
        layers: the representation embedded, one layer (the penultimate layer, `("pool",)`).
        alpha: weight of VCL (0.1).
        beta: weight of ICL (0.1).
        gamma: weight of soft VCL (1).
        lam: weight of soft ICL (1).
        temperature: the contrastive temperature tau (0.1, the CIFAR code).
        kd_temperature: T of the soft terms (3).
        embedding_dim: d (128).
        num_negatives: K keys drawn per anchor (8192, the ImageNet code's negatives).
        momentum: the memory's momentum (0.5).
        memory_dtype: `"float32"`, `"float16"` or `"bfloat16"`.
        seed: seed of the keys' generator.
        reduction: `"sum"` (the code) or `"mean"` over the other networks.
        name: part name (default `"mcl"`).

    Example:

    >>> part = MutualContrastive(num_samples=50_000, num_negatives=4096)
    >>> part.build_for_peers(2, 100, {"peer_features": [{"pool": (None, 64)}, {"pool": (None, 64)}]})
    >>> tuple(part.memory.shape), tuple(part.labels.shape)
    ((50000, 2, 128), (50000,))
    """

    label = "MCL"

    def __init__(self, num_samples, layers=("pool",), alpha=0.1, beta=0.1, gamma=1.0, lam=1.0, temperature=0.1,
                 kd_temperature=3.0, embedding_dim=128, num_negatives=8192, momentum=0.5, memory_dtype="float32",
                 seed=None, reduction="sum", name="mcl", **kwargs):
        kwargs.pop("weight", None)
        kwargs.pop("normalize", None)
        super().__init__(num_samples, layers=layers, weight=1.0, embedding_dim=embedding_dim,
                         num_negatives=num_negatives, temperature=temperature, momentum=momentum, normalize=False,
                         memory_dtype=memory_dtype, seed=seed, reduction=reduction, name=name, **kwargs)
        for arg, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("lam", lam)):
            if not float(value) >= 0.0:
                raise ValueError(f"MutualContrastive: {arg} must be >= 0, got {value!r}.")
        if not float(kd_temperature) > 0.0:
            raise ValueError(f"MutualContrastive: kd_temperature must be > 0, got {kd_temperature!r}.")
        self.alpha, self.beta, self.gamma, self.lam = float(alpha), float(beta), float(gamma), float(lam)
        self.kd_temperature = float(kd_temperature)

    def build(self, input_shape):
        super().build(input_shape)
        self.labels = self.add_weight(shape=(self.num_samples,), initializer=keras.initializers.Constant(-1),
                                      trainable=False, dtype="int32", name="labels")

    def build_connectors(self, shapes):
        self.connectors.set([self.embedding_head(i, int(np.prod(shapes[i][0][1:]))) for i in range(self.num_peers)])

    def embedding_head(self, slot, dim_in):
        """The embedding head of memory slot `slot` (Linear-ReLU-Linear, as the authors' code), built for `dim_in`
        features."""
        head = keras.Sequential([
            keras.layers.Dense(self.embedding_dim, activation="relu", dtype="float32", name="hidden"),
            keras.layers.Dense(self.embedding_dim, dtype="float32", name="out"),
        ], name=f"{self.name}_embedding_{slot}")
        head.build((None, dim_in))
        return head

    def targets(self, peer_logits, context):
        features = self.peer_features(context)
        anchors = ops.stack([self.embed(i, features[i][0]) for i in range(self.num_peers)], axis=1)  # (B, M, d)
        icl_logits, same, state = self.contrast(anchors, context)
        drawn_score = icl_logits[..., 1:]  # (B, M, M, K): the drawn keys only
        icl_positives = ops.concatenate([ops.ones_like(same[:, :1]), same], axis=-1)  # (B, K + 1)
        scale = 1.0 / (self.num_peers - 1) if self.reduction == "mean" else 1.0
        sample_weight = context.get("sample_weight")

        def mean(per_sample):
            return _batch_mean(per_sample, sample_weight)

        terms = []
        for a in range(self.num_peers):
            vcl = mean(supervised_contrastive(drawn_score[:, a, a], same))
            others = [m for m in range(self.num_peers) if m != a]
            soft_vcl = sum(mean(soft_contrastive(drawn_score[:, a, a], drawn_score[:, m, m], self.kd_temperature))
                           for m in others)
            icl = sum(mean(supervised_contrastive(icl_logits[:, a, m], icl_positives)) for m in others)
            soft_icl = sum(mean(soft_contrastive(icl_logits[:, a, m], icl_logits[:, m, a], self.kd_temperature))
                           for m in others)
            terms.append(self.alpha * vcl + scale * (self.gamma * soft_vcl + self.beta * icl + self.lam * soft_icl))
        return PartOutput(peer_losses=ops.stack(terms), state=state)

    def contrast(self, anchors, context):
        """Every anchor against every memory slot, and the memory's pending write.

        Args:
            anchors: `(B, S, d)` this step's embeddings, one per memory slot (S = `memory_slots`).
            context: the step's context (`"labels"`, `"index"`, `"training"`).

        Returns:
            `(logits, positives, state)`: `logits` `(B, S, S, K + 1)`, anchor slot a against memory slot m, first
            the sample's own row of m (the anchor of slot m itself without an index), then the K drawn keys, divided
            by tau; `positives` `(B, K)`, 1 where a drawn key's stored label is the sample's; `state` the rows and
            labels to write (None outside training or without an index).
        """
        batch = ops.shape(anchors)[0]
        training = bool(context.get("training"))
        labels = ops.reshape(ops.cast(context["labels"], "int32"), (-1,))
        index = context.get("index")
        if index is None:
            own = ops.stop_gradient(anchors)
        else:
            index = ops.reshape(ops.cast(index, "int32"), (-1,))
            own = self.read(index)  # (B, S, d): every slot's memory row of the batch's samples
        drawn = self.draw_negatives(batch, training)  # (B, K) in training, (1, K) outside
        keys = self.read(drawn)  # (B or 1, K, S, d)
        key_labels = ops.reshape(gather_rows(self.labels, ops.reshape(drawn, (-1,))), ops.shape(drawn))
        same = ops.cast(ops.equal(key_labels, labels[:, None]), "float32")  # (B, K)
        tau = self.temperature
        own_score = ops.einsum("bad,bmd->bam", anchors, own) / tau  # (B, S, S)
        if training:
            drawn_score = ops.einsum("bad,bkmd->bamk", anchors, keys) / tau  # (B, S, S, K)
        else:
            drawn_score = ops.einsum("bad,kmd->bamk", anchors, keys[0]) / tau
        logits = ops.concatenate([own_score[..., None], drawn_score], axis=-1)  # (B, S, S, K + 1)
        state = None
        if index is not None and training:
            new = momentum_update(own, ops.stop_gradient(anchors), self.momentum)
            state = {"index": index, "old": own, "new": new, "labels": labels,
                     "old_labels": gather_rows(self.labels, index)}
        return logits, same, state

    def commit(self, state, finite):
        super().commit(state, finite)
        scatter_rows(self.labels, state["index"], ops.where(finite, state["labels"], state["old_labels"]))

    def get_config(self):
        config = super().get_config()
        for key in ("weight", "normalize"):
            config.pop(key, None)
        config.update({"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "lam": self.lam,
                       "kd_temperature": self.kd_temperature})
        return config
