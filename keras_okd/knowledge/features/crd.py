"""Contrastive representation distillation (Tian, Krishnan and Isola, "Contrastive Representation Distillation",
ICLR 2020), made online.

Each network's representation is embedded by a linear head and L2-normalised, `g(x)` in R^d. For an anchor
embedding `v` of sample k, the positive is the other network's embedding of the same sample and N negatives are
its embeddings of random other samples, both read from a per-sample memory of embeddings (the memory bank of Wu et
al., 2018) that is updated with momentum after each step. With `e = exp(v^T u / tau)` and the critic
`h = (e / Z) / (e / Z + N / M)` (Eq. 10, M the number of training samples), the NCE loss (Eq. 18) is
`-log h(positive) - sum_{negatives} log(1 - h(negative))`, averaged over the batch. The authors' code (CRD's
benchmark, RepDistiller) computes both directions (student anchors against the teacher's memory and the reverse) and
sums them; online, the two directions of a pair are the two peers' own terms.

Z: the paper's critic has Z = 1; the authors' code divides `e` by Z = M * mean(e), estimated once from its first
batch, when the memory still holds its uniform initialisation (entries U(-a, a), a = sqrt(3 / d)). Against such rows
`v^T u` is a sum of d independent terms of variance 1 / d, so that estimate's expectation is `M * exp(1 / (2 d tau^2))`;
here Z takes this closed form (the default, `normalize=True`): the same number without state, identical on every
replica and across resumes. `normalize=False` gives the paper's Z = 1.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_okd.backend import bank_storage_dtype, device_memory, from_storage, gather_rows, scatter_rows, to_storage
from keras_okd.knowledge.base import PartOutput
from keras_okd.knowledge.features.base import FeatureDistillation, safe_l2_normalize
from keras_okd.losses import _batch_mean

EPSILON = 1e-7


def normalizer(num_samples, dim, temperature):
    """Z of the authors' code in closed form: `num_samples * exp(1 / (2 * dim * temperature^2))` (see the module)."""
    return float(num_samples) * math.exp(1.0 / (2.0 * dim * temperature * temperature))


def nce_loss(positive, negatives, num_samples, z=1.0, epsilon=EPSILON):
    """Eq. 18 per sample: `-log h(s_+) - sum_k log(1 - h(s_k))` for scores `s = exp(v^T u / tau)`.

    `h(s) = (s / z) / (s / z + K / M)`, K = negatives.shape[-1] negatives, M = `num_samples`; `1 - h` is written
    `(K / M) / (s / z + K / M)`, and `epsilon` (1e-7, the authors' code) keeps both denominators positive.

    Args:
        positive: `(...)` the positive's score.
        negatives: `(..., K)` the negatives' scores.
        num_samples: M, the training set's size.
        z: the normaliser Z.

    Returns:
        `positive.shape` float32.
    """
    p_positive = ops.cast(positive, "float32") / z
    p_negatives = ops.cast(negatives, "float32") / z
    noise = negatives.shape[-1] / float(num_samples)
    log_positive = ops.log(p_positive / (p_positive + noise + epsilon))
    log_negatives = ops.sum(ops.log(noise / (p_negatives + noise + epsilon)), axis=-1)
    return -(log_positive + log_negatives)


def momentum_update(old, new, momentum):
    """The memory's update of the authors' code: `normalize(momentum * old + (1 - momentum) * new)` per row."""
    return safe_l2_normalize(momentum * old + (1.0 - momentum) * new, axis=-1)


@keras.saving.register_keras_serializable(package="keras_okd")
class ContrastiveRepresentation(FeatureDistillation):
    """Online CRD: each peer embeds its representation (a linear head + L2 norm, owned by the part) and contrasts
    it, for every other peer j, against j's memory: the positive is j's stored embedding of the same sample, the
    negatives j's stored embeddings of `num_negatives` samples drawn uniformly from the training set at each step.

    State: `memory`, `(num_samples, peers, embedding_dim)`, non-trainable, initialised U(-a, a) with
    a = sqrt(3 / embedding_dim) as the authors' code, saved with the model (so resumed runs continue from it). A step
    reads the batch's rows and `batch x num_negatives` negative rows and writes the batch's rows back
    (`momentum_update`), through `keras_okd.backend.gather_rows` / `scatter_rows`: O(batch x (negatives + 1) x peers
    x dim) whatever `num_samples` is, and under several replicas every replica writes every replica's rows. Rows are
    written only in training and only when the step's loss is finite; a batch must not repeat an index. Without an
    index (validation data) the positive is the other peer's current embedding and nothing is written.

    Negatives are drawn uniformly over all training samples (the paper's instance-level negatives; the authors'
    CIFAR-100 code instead draws them from other classes, its `mode="exact"`). They are drawn with
    `keras.random` from the part's seed generator in training (its state is saved with the weights, so a resumed run
    draws the ones an uninterrupted run would). Outside training (the logged evaluation loss) one set of negatives,
    from a fixed seed, serves the whole batch: the same loss in expectation, nothing changed, reproducible, and a read
    of O(num_negatives) rows, so that evaluation's larger batches fit (per-anchor negatives at batch 1000 would read
    16 GB).

    Args:
        num_samples: M, the training set's size (indices in `[0, M)`, from `keras_okd.data.with_index`).
        layers: the representation embedded, one layer (the paper: the penultimate layer, `("pool",)`).
        weight: beta (the paper and its code: 0.8).
        embedding_dim: d (128).
        num_negatives: N negatives per anchor (16384).
        temperature: tau (the code's default: 0.07).
        momentum: the memory's momentum (0.5).
        normalize: Z as the authors' code (True, see the module) or the paper's Z = 1 (False).
        memory_dtype: `"float32"`, or `"float16"` / `"bfloat16"` to halve the memory.
        seed: seed of the negatives' generator (None: from Keras's global seed).
        reduction: `"mean"` or `"sum"` over the other peers.
        name: part name (default `"crd"`).

    Example:

    >>> part = ContrastiveRepresentation(num_samples=50_000, num_negatives=4096)
    >>> part.build_for_peers(2, 100, {"peer_features": [{"pool": (None, 64)}, {"pool": (None, 128)}]})
    >>> tuple(part.memory.shape)
    (50000, 2, 128)
    """

    label = "CRD"  # the method's name in TSB Table 4 and the report
    needs_index = True
    max_layers = 1

    def __init__(
        self,
        num_samples,
        layers=("pool",),
        weight=0.8,
        embedding_dim=128,
        num_negatives=16384,
        temperature=0.07,
        momentum=0.5,
        normalize=True,
        memory_dtype="float32",
        seed=None,
        reduction="mean",
        name="crd",
        **kwargs,
    ):
        super().__init__(layers=layers, weight=weight, reduction=reduction, name=name, temperature=temperature,
                         **kwargs)
        for arg, value in (("num_samples", num_samples), ("embedding_dim", embedding_dim),
                           ("num_negatives", num_negatives)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"ContrastiveRepresentation: {arg} must be a positive int, got {value!r}.")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"ContrastiveRepresentation: momentum must lie in [0, 1), got {momentum}.")
        self.num_samples = int(num_samples)
        self.embedding_dim = int(embedding_dim)
        self.num_negatives = int(num_negatives)
        self.momentum = float(momentum)
        self.normalize = bool(normalize)
        self.memory_dtype = keras.backend.standardize_dtype(memory_dtype)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="negatives")

    @property
    def z(self):
        """The normaliser Z (see the module)."""
        if not self.normalize:
            return 1.0
        return normalizer(self.num_samples, self.embedding_dim, self.temperature)

    @property
    def slots_per_peer(self):
        """Memory rows per sample and peer: one embedding (L-MCL keeps one per contrasted layer)."""
        return 1

    @property
    def memory_slots(self):
        """The memory's rows per sample: peers x `slots_per_peer`."""
        return self.num_peers * self.slots_per_peer

    def memory_bytes(self, num_peers=None):
        """Bytes the memory takes for `num_peers` peers (default: this part's)."""
        itemsize = np.dtype(self.memory_dtype if self.memory_dtype != "bfloat16" else "float16").itemsize
        return self.num_samples * (num_peers or self.num_peers) * self.slots_per_peer * self.embedding_dim * itemsize

    def build(self, input_shape):
        super().build(input_shape)
        nbytes, (total, where) = self.memory_bytes(), device_memory()
        if total is not None and nbytes > total:
            raise MemoryError(
                f"The CRD memory {self.name!r} ({self.num_samples:,} samples x {self.memory_slots} peer slots x "
                f"{self.embedding_dim} dims, {self.memory_dtype}) needs {nbytes:,} bytes but {where} holds {total:,}. "
                "Options: memory_dtype='float16' or 'bfloat16' halves it; a smaller embedding_dim shrinks it; or "
                "build the distiller on the CPU (inside `with keras.device('cpu:0'):`) when the host has the RAM."
            )
        bound = 1.0 / math.sqrt(self.embedding_dim / 3.0)
        dtype = self.memory_dtype
        # An int seed drawn now (numpy is seeded by keras.utils.set_random_seed): Keras may initialize the memory
        # later, inside a traced function, where JAX refuses the global seed generator.
        seed = self.seed if self.seed is not None else int(np.random.randint(0, 2**31 - 1))

        def initializer(shape, dtype=None):
            return to_storage(keras.random.uniform(shape, -bound, bound, seed=seed), self.memory_dtype)

        self.memory = self.add_weight(
            shape=(self.num_samples, self.memory_slots, self.embedding_dim),
            initializer=initializer,
            trainable=False,
            dtype=bank_storage_dtype(dtype),
            name="memory",
        )
        self.built = True

    def build_connectors(self, shapes):
        heads = []
        for i in range(self.num_peers):
            head = keras.layers.Dense(self.embedding_dim, dtype="float32", name=f"{self.name}_embedding_{i}")
            head.build((None, int(np.prod(shapes[i][0][1:]))))
            heads.append(head)
        self.connectors.set(heads)

    def embed(self, peer, feature):
        """Peer `peer`'s embedding `(batch, embedding_dim)`, L2-normalised, of its feature (flattened)."""
        flat = ops.reshape(feature, (ops.shape(feature)[0], -1))
        return safe_l2_normalize(self.connectors[peer](flat))

    def draw_negatives(self, batch_size, training):
        """Uniform sample indices of the negatives: `(batch_size, num_negatives)` in training, from the seed
        generator (each anchor its own, as the paper and its code); otherwise `(1, num_negatives)` from a fixed seed,
        one set shared by the batch's anchors."""
        if training:
            shape, seed = (batch_size, self.num_negatives), self.seed_generator
        else:
            shape, seed = (1, self.num_negatives), 1234 if self.seed is None else int(self.seed)
        return keras.random.randint(shape, 0, self.num_samples, seed=seed, dtype="int32")

    def read(self, index):
        """Memory rows `index` (any integer shape) as float32 `(*index.shape, memory_slots, dim)`."""
        flat = ops.reshape(index, (-1,))
        rows = ops.cast(from_storage(gather_rows(self.memory, flat), self.memory_dtype), "float32")
        return ops.stop_gradient(ops.reshape(rows, tuple(ops.shape(index)) + (self.memory_slots, self.embedding_dim)))

    def targets(self, peer_logits, context):
        features = self.peer_features(context)
        anchors = ops.stack([self.embed(i, features[i][0]) for i in range(self.num_peers)], axis=1)  # (B, M, d)
        batch = ops.shape(anchors)[0]
        training = bool(context.get("training"))
        index = context.get("index")
        if index is None:
            positives = ops.stop_gradient(anchors)
        else:
            index = ops.reshape(ops.cast(index, "int32"), (-1,))
            positives = self.read(index)  # (B, M, d)
        negatives = self.read(self.draw_negatives(batch, training))  # (B, K, M, d); (1, K, M, d) outside training
        # Scores of anchor i against memory j; positives and negatives apart, so no (B, K + 1, M, d) copy is made.
        positive = ops.exp(ops.einsum("bid,bjd->bij", anchors, positives) / self.temperature)  # (B, M, M)
        if training:
            negative = ops.einsum("bid,bkjd->bijk", anchors, negatives)
        else:
            negative = ops.einsum("bid,kjd->bijk", anchors, negatives[0])
        negative = ops.exp(negative / self.temperature)  # (B, M, M, K)
        per_sample = nce_loss(positive, negative, self.num_samples, self.z)  # (B, M, M)
        sample_weight = context.get("sample_weight")
        state = None
        if index is not None and training:
            new = momentum_update(positives, ops.stop_gradient(anchors), self.momentum)
            state = {"index": index, "old": positives, "new": new}
        return PartOutput(peer_losses=self.aggregate(lambda i, j: _batch_mean(per_sample[:, i, j], sample_weight)),
                          state=state)

    def commit(self, state, finite):
        rows = ops.where(finite, state["new"], state["old"])
        scatter_rows(self.memory, state["index"], to_storage(rows, self.memory_dtype))

    # Keras saves a layer's weights but not its seed generators' states; the negatives' generator is saved with
    # them, so a resumed run draws the negatives an uninterrupted one would.
    _SEED_KEY = "negatives_seed_state"

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[self._SEED_KEY] = self.seed_generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        if self._SEED_KEY in keys:
            self.seed_generator.state.assign(store[self._SEED_KEY])
        super().load_own_variables({key: store[key] for key in keys if key != self._SEED_KEY})

    def get_config(self):
        return {
            **super().get_config(),
            "num_samples": self.num_samples,
            "embedding_dim": self.embedding_dim,
            "num_negatives": self.num_negatives,
            "momentum": self.momentum,
            "normalize": self.normalize,
            "memory_dtype": self.memory_dtype,
            "seed": self.seed,
        }
