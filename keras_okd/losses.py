"""Pure loss functions of online knowledge distillation, written once in `keras.ops`.

Conventions used throughout keras-okd:

- Peer outputs are stacked batch-first: logits of shape `(batch, peers, classes)`.
- Targets are probability distributions `(batch, targets, classes)`, never logits, and never receive gradient
  (`keras.ops.stop_gradient` is applied by the caller that builds them).
- The KD term is `tau**2 * KL(target || softmax(student / tau))`, averaged over the batch. This is the direction of
  DML, Hinton et al. and DKEL's Eq. (1); the TSB paper writes its Eq. (2) with the arguments swapped but cites those
  works, and `tau**2` keeps gradient sizes comparable across temperatures.
"""

from keras import ops

_TINY = 1e-30


def soften(logits, temperature=1.0):
    """Temperature-softened probabilities `softmax(logits / temperature)` over the last axis, in float32.

    Args:
        logits: tensor `(..., classes)`.
        temperature: positive float.

    Returns:
        Float32 tensor of the same shape whose last axis sums to one.

    Example:

    >>> import numpy as np, keras
    >>> logits = np.array([[0.0, np.log(3.0)]], "float32")
    >>> np.round(keras.ops.convert_to_numpy(soften(logits)), 4)
    array([[0.25, 0.75]], dtype=float32)
    >>> np.round(keras.ops.convert_to_numpy(soften(logits, temperature=2.0)), 4)   # softer
    array([[0.366, 0.634]], dtype=float32)
    """
    return ops.softmax(ops.cast(logits, "float32") / temperature, axis=-1)


def pairwise_kd(targets, student_logits, temperature, pair_weights, sample_weight=None, stop_target_gradient=True):
    """Weighted KD of every peer from every target: `tau^2 * sum_j W[i, j] * KL(t_j || p_i)` per peer.

    Args:
        targets: probabilities `(batch, num_targets, classes)`; treated as constants unless `stop_target_gradient`
            is False.
        student_logits: peer logits `(batch, num_peers, classes)`.
        temperature: the KD temperature `tau`.
        pair_weights: `(num_peers, num_targets)`; row i says how much peer i learns from each target.
        sample_weight: optional `(batch,)` weights; the batch mean becomes `mean(w * loss)`.
        stop_target_gradient: detach the targets (default). False lets the gradient flow into whatever built them,
            for a method whose paper trains its target builder through this loss (OKDDip's attention weights).

    Returns:
        Float32 tensor `(num_peers,)`: each peer's KD loss, averaged over the batch.

    Example:

    >>> import numpy as np
    >>> t = np.full((1, 1, 2), 0.5, "float32")
    >>> z = np.zeros((1, 2, 2), "float32")
    >>> float(pairwise_kd(t, z, 4.0, np.ones((2, 1), "float32"))[0])
    0.0
    """
    targets = ops.cast(targets, "float32")
    if stop_target_gradient:
        targets = ops.stop_gradient(targets)
    log_p = ops.log_softmax(ops.cast(student_logits, "float32") / temperature, axis=-1)
    neg_entropy = ops.sum(targets * ops.log(ops.maximum(targets, _TINY)), axis=-1)  # (B, J)
    cross = ops.einsum("bjc,bmc->bmj", targets, log_p)  # (B, M, J)
    kl = ops.expand_dims(neg_entropy, 1) - cross  # (B, M, J)
    per_sample = ops.sum(kl * ops.cast(pair_weights, "float32"), axis=-1)  # (B, M)
    return (temperature**2) * _batch_mean(per_sample, sample_weight)


def kd_divergence(target_probs, student_logits, temperature=1.0, sample_weight=None):
    """`tau^2 * KL(target || softmax(student / tau))` averaged over the batch: the KD term of one student.

    Args:
        target_probs: `(batch, classes)` probabilities (already softened by the caller).
        student_logits: `(batch, classes)` logits of the student.
        temperature: the KD temperature `tau`.
        sample_weight: optional `(batch,)` weights.

    Returns:
        A float32 scalar.

    Example:

    >>> import numpy as np
    >>> target = np.array([[0.5, 0.5]], "float32")
    >>> student = np.array([[0.0, np.log(3.0)]], "float32")   # softmax: [0.25, 0.75]
    >>> round(float(kd_divergence(target, student)), 4)         # 0.5 ln(0.5 / 0.25) + 0.5 ln(0.5 / 0.75)
    0.1438
    """
    return pairwise_kd(
        ops.expand_dims(target_probs, 1),
        ops.expand_dims(student_logits, 1),
        temperature,
        ops.ones((1, 1)),
        sample_weight,
    )[0]


def peer_cross_entropy(labels, peer_logits, sample_weight=None):
    """Sparse cross-entropy of every peer against integer labels (temperature 1).

    Args:
        labels: integer tensor `(batch,)`.
        peer_logits: `(batch, num_peers, classes)`.
        sample_weight: optional `(batch,)` weights.

    Returns:
        Float32 tensor `(num_peers,)`.

    Example:

    >>> import numpy as np, keras
    >>> labels = np.array([1])
    >>> logits = np.array([[[0.0, np.log(3.0)], [0.0, 0.0]]], "float32")   # 1 sample, 2 peers, 2 classes
    >>> np.round(keras.ops.convert_to_numpy(peer_cross_entropy(labels, logits)), 4)   # -ln 0.75, ln 2
    array([0.2877, 0.6931], dtype=float32)
    """
    log_p = ops.log_softmax(ops.cast(peer_logits, "float32"), axis=-1)
    onehot = ops.one_hot(ops.cast(labels, "int32"), ops.shape(peer_logits)[-1], dtype="float32")
    per_sample = -ops.sum(ops.expand_dims(onehot, 1) * log_p, axis=-1)  # (B, M)
    return _batch_mean(per_sample, sample_weight)


def ensemble_probabilities(peer_logits):
    """Mean of the peers' softmax probabilities: `(batch, peers, classes) -> (batch, classes)`.

    Args:
        peer_logits: `(batch, num_peers, classes)` logits.

    Returns:
        Float32 tensor `(batch, classes)`: what `OnlineDistiller.predict` returns when every peer is deployed.

    Example:

    >>> import numpy as np, keras
    >>> logits = np.array([[[0.0, np.log(3.0)], [0.0, 0.0]]], "float32")   # peers: [0.25, 0.75] and [0.5, 0.5]
    >>> np.round(keras.ops.convert_to_numpy(ensemble_probabilities(logits)), 4)
    array([[0.375, 0.625]], dtype=float32)
    """
    return ops.mean(soften(peer_logits), axis=1)


def _batch_mean(per_sample, sample_weight):
    if sample_weight is not None:
        w = ops.reshape(ops.cast(sample_weight, "float32"), (-1,) + (1,) * (len(per_sample.shape) - 1))
        per_sample = per_sample * w
    return ops.mean(per_sample, axis=0)


def coupled_weight_decay(variables, decay):
    """`0.5 * decay * sum ||w||^2` over `variables` (float32): its gradient `decay * w` joins the loss's gradient
    before momentum, as `torch.optim.SGD(weight_decay=decay)` applies it; 0 when `decay` is 0.

    Args:
        variables: the weights to decay (`keras.Variable`s or tensors).
        decay: the weight-decay factor (0 or None: no term).

    Returns:
        A float32 scalar.

    Example:

    >>> import keras
    >>> weights = [keras.Variable([[1.0, 2.0]]), keras.Variable([3.0])]
    >>> round(float(keras.ops.convert_to_numpy(coupled_weight_decay(weights, 0.1))), 4)   # 0.5 * 0.1 * (1 + 4 + 9)
    0.7
    >>> float(keras.ops.convert_to_numpy(coupled_weight_decay(weights, 0.0)))
    0.0
    """
    if not decay:
        return ops.zeros((), "float32")
    return 0.5 * decay * ops.sum(ops.stack([ops.sum(ops.square(ops.cast(v, "float32"))) for v in variables]))
