"""What `fit` and `evaluate` log for every peer: the metric trackers of an `OnlineDistiller`.

Per peer `{peer}_ce` (cross-entropy), `{peer}_accuracy`, `{peer}_logit_std` (batch mean of the standard deviation of
the peer's logits over classes: near zero for a peer collapsed to uniform output), and for every knowledge part
`{peer}_{part}` (its term before weight and schedule) and the part's own losses `{part}_{name}`; `ensemble_accuracy`
(mean of the peers' probabilities); with a mean teacher `teacher_{i}_accuracy` and `teacher_ensemble_accuracy`.
"""

import keras
from keras import ops

from keras_okd.losses import ensemble_probabilities


class PeerLogs(keras.layers.Layer):
    """The trackers (`keras.metrics.Mean`) of one distiller's logs; Keras collects them through this layer.

    Args:
        peer_names: `student_{i}` or `branch_{i}` per peer.
        parts: the knowledge parts.
        teacher: whether there is a mean teacher to log.
    """

    def __init__(self, peer_names, parts, teacher, **kwargs):
        super().__init__(**kwargs)
        mean = keras.metrics.Mean
        groups = [list(peer_names)] + ([[f"teacher_{i}" for i in range(len(peer_names))]] if teacher else [])
        self.ce = [mean(name=f"{p}_ce") for p in peer_names]
        self.spread = [mean(name=f"{p}_logit_std") for p in peer_names]
        self.accuracy = [[mean(name=f"{p}_accuracy") for p in group] for group in groups]
        self.ensemble = [mean(name=f"{'teacher_' if g else ''}ensemble_accuracy") for g in range(len(groups))]
        self.part_terms = [[mean(name=f"{p}_{part.name}") for p in peer_names] for part in parts]
        self.part_losses = [{n: mean(name=f"{part.name}_{n}") for n in part.loss_names} for part in parts]

    def update_part(self, k, terms, losses):
        """Log part `k`'s per-peer terms `(M,)` and its own losses `{name: scalar}`."""
        for i, tracker in enumerate(self.part_terms[k]):
            tracker.update_state(terms[i])
        for name, value in losses.items():
            self.part_losses[k][name].update_state(value)

    def update_peers(self, ce, peer_logits, labels, teacher_logits=None, sample_weight=None):
        """Log each peer's cross-entropy `(M,)`, logit spread and accuracy, the ensemble's accuracy, and the
        teacher's when there is one."""
        spread = ops.mean(ops.std(peer_logits, axis=-1), axis=0)
        for i in range(len(self.ce)):
            self.ce[i].update_state(ce[i])
            self.spread[i].update_state(spread[i])
        logits_sets = [peer_logits] + ([teacher_logits] if len(self.accuracy) > 1 else [])
        for logits, trackers, ensemble in zip(logits_sets, self.accuracy, self.ensemble):
            correct = ops.cast(ops.equal(ops.argmax(logits, axis=-1), ops.expand_dims(labels, 1)), "float32")
            for i, tracker in enumerate(trackers):
                tracker.update_state(correct[:, i], sample_weight=sample_weight)
            hit = ops.equal(ops.argmax(ensemble_probabilities(logits), axis=-1), labels)
            ensemble.update_state(ops.cast(hit, "float32"), sample_weight=sample_weight)
