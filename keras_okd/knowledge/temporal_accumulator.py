"""Temporal accumulator (TSB, Eq. 3-6 and Algorithm 1): a per-sample EMA of each peer's past predictions."""

import keras
from keras import ops

import numpy as np

from keras_okd.backend import bank_storage_dtype, check_state_fits, from_storage, gather_rows, scatter_rows, to_storage
from keras_okd.knowledge.base import KnowledgePart, PartOutput, other_peers
from keras_okd.losses import soften


#: Dtypes a bank may have: floats wide enough for probabilities (float64 gains nothing and JAX truncates it).
BANK_DTYPES = ("float32", "float16", "bfloat16")


@keras.saving.register_keras_serializable(package="keras_okd")
class TemporalAccumulator(KnowledgePart):
    """Each peer keeps, for every training sample k, the EMA of its own softened predictions on k; peer i learns
    from the other peers' bias-corrected accumulators.

    On each visit of sample k (training only), for every peer j, following Algorithm 1 (fold in, then read):

        Z_j[k] <- beta * Z_j[k] + (1 - beta) * softmax(z_j(x_k) / tau)
        target_j(k) = Z_j[k] / (1 - beta ** n_k)

    where `n_k` is how many times sample k has been folded in, this visit included (the paper's epoch count t,
    kept per sample so that partial epochs and resumed runs stay exact). The bank holds the raw EMA; the bias
    correction is applied on read. Peer i's loss is `weight * sum_{j != i} tau^2 * KL(target_j || p_i)` (the paper's
    sum of pairwise terms; `reduction="mean"` averages them instead).

    State: `bank`, float `(num_samples, peers, classes)`, and `counts`, int32 `(num_samples,)`, both non-trainable
    variables, zero-initialised, saved with the model. A step gathers and scatters only its batch's rows: the cost is
    O(batch x peers x classes) whatever `num_samples` is. Rows are written only in training and only when the step's
    loss is finite.

    Samples are identified by the index `keras_okd.data.with_index` attaches; a batch must not repeat an index.
    Without an index (validation data), the target reads as on a sample's first visit, i.e. the other peers' current
    predictions, and nothing is written.

    Args:
        num_samples: N, the size of the training set (indices lie in `[0, N)`): the presets' `num_train_samples`.
        beta: EMA momentum in (0, 1) (TSB: 0.8).
        weight: constant factor (TSB's lambda_ta = 0.5).
        temperature: softening temperature (TSB: 4).
        reduction: `"sum"` (paper) or `"mean"` over the other peers.
        bank_dtype: dtype of the bank, `"float32"` by default; `"float16"` or `"bfloat16"` halve it (on JAX a
            bfloat16 bank is kept as its uint16 bits, see `keras_okd.backend.bank_storage_dtype`). The bank holds
            probabilities, so only these float dtypes are accepted (an integer or bool bank would stay zero).
        name: part name (default `"ta"`).

    Example:

    >>> part = TemporalAccumulator(num_samples=1000, beta=0.8, weight=0.5, temperature=4.0)
    >>> part.build_for_peers(num_peers=2, num_classes=10)
    >>> tuple(part.bank.shape)
    (1000, 2, 10)
    """

    needs_index = True

    def __init__(
        self,
        num_samples,
        beta=0.8,
        weight=1.0,
        temperature=1.0,
        reduction="sum",
        bank_dtype="float32",
        name="ta",
        **kwargs,
    ):
        super().__init__(weight=weight, temperature=temperature, name=name, **kwargs)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(
                f"TemporalAccumulator: num_samples must be a positive int (the training set's size), got {num_samples!r}."
            )
        if not 0.0 < float(beta) < 1.0:
            raise ValueError(f"TemporalAccumulator: beta must lie in (0, 1), got {beta}.")
        other_peers(2, reduction)
        try:
            standard = keras.backend.standardize_dtype(bank_dtype)
        except (ValueError, TypeError, AttributeError):
            standard = None
        if standard not in BANK_DTYPES:
            raise ValueError(
                f"TemporalAccumulator: bank_dtype must be one of {', '.join(BANK_DTYPES)} (the bank holds "
                f"probabilities in [0, 1]; an integer or bool bank would round them to 0), got {bank_dtype!r}."
            )
        self.num_samples = num_samples
        self.beta = float(beta)
        self.reduction = reduction
        self.bank_dtype = standard

    def build(self, input_shape):
        super().build(input_shape)
        # refused before anything is allocated; the distiller checks the sum of every part's state again at fit
        check_state_fits(self.state_bytes(), f"The temporal accumulator {self.name!r}")
        self.bank = self.add_weight(
            shape=(self.num_samples, self.num_peers, self.num_classes),
            initializer="zeros",
            trainable=False,
            dtype=bank_storage_dtype(self.bank_dtype),  # bfloat16 on JAX: its uint16 bits (see keras_okd.backend)
            name="bank",
        )
        self.counts = self.add_weight(
            shape=(self.num_samples,), initializer="zeros", trainable=False, dtype="int32", name="counts"
        )
        self.built = True

    def state_bytes(self):
        """Bytes of the bank and the visit counts, `num_samples * (peers * classes * itemsize + 4)`: known once the
        part is built for its peers, before they are allocated (0 before)."""
        if self.num_peers is None:
            return 0
        itemsize = np.dtype(keras.backend.standardize_dtype(self.bank_dtype)).itemsize
        return self.num_samples * (self.num_peers * self.num_classes * itemsize + 4)

    def targets(self, peer_logits, context):
        probs = soften(peer_logits, self.temperature)
        pair_weights = other_peers(self.num_peers, self.reduction)
        index = context.get("index")
        if index is None:
            return PartOutput(targets=probs, pair_weights=pair_weights)
        index = ops.reshape(ops.cast(index, "int32"), (-1,))
        old = ops.cast(from_storage(gather_rows(self.bank, index), self.bank_dtype), "float32")
        counts = gather_rows(self.counts, index) + 1
        new = self.beta * old + (1.0 - self.beta) * probs
        correction = 1.0 - ops.power(self.beta, ops.cast(counts, "float32"))
        targets = new / ops.reshape(correction, (-1, 1, 1))
        state = {"index": index, "old": old, "new": new, "counts": counts}
        return PartOutput(targets=targets, pair_weights=pair_weights, state=state)

    def commit(self, state, finite):
        index = state["index"]
        scatter_rows(self.bank, index, to_storage(ops.where(finite, state["new"], state["old"]), self.bank_dtype))
        counts = state["counts"]
        scatter_rows(self.counts, index, ops.where(finite, counts, counts - 1))

    def corrected_bank(self):
        """The whole bias-corrected bank `(num_samples, peers, classes)` as a tensor (rows never visited are zero).

        O(N x classes): for inspection and analysis, never called by the training step.
        """
        counts = ops.cast(self.counts, "float32")
        correction = 1.0 - ops.power(self.beta, counts)
        safe = ops.where(counts > 0, correction, 1.0)
        return ops.cast(from_storage(self.bank.value, self.bank_dtype), "float32") / ops.reshape(safe, (-1, 1, 1))

    def get_config(self):
        return {
            **super().get_config(),
            "num_samples": self.num_samples,
            "beta": self.beta,
            "reduction": self.reduction,
            "bank_dtype": self.bank_dtype,
        }
