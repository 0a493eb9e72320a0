"""What `fit` and `evaluate` log for every peer: the metric trackers of an `OnlineDistiller`.

`loss` (Keras's) is the total that is minimised: the sum over the peers of their cross-entropies and weighted
knowledge terms, plus weight decay and the students' own losses. It is a sum, not a mean: with M students it is about
M times one student's cross-entropy.

Per peer `{peer}_ce` (cross-entropy), `{peer}_accuracy`, `{peer}_logit_std` (batch mean of the standard deviation of
the peer's logits over classes: near zero for a peer collapsed to uniform output), and for every knowledge part
`{peer}_{part}` (its term before weight and schedule) and the part's own losses `{part}_{name}`; `ensemble_accuracy`
(mean of the peers' probabilities); with a mean teacher `teacher_{i}_accuracy` and `teacher_ensemble_accuracy`.
"""

import keras
from keras import ops
from keras.src.trainers.compile_utils import MetricsList  # where Keras's callbacks look for a metric's direction

from keras_okd.losses import ensemble_probabilities


class Directed(keras.metrics.Mean):
    """A `keras.metrics.Mean` that tells Keras's callbacks which way is better (`"up"`, `"down"` or None).

    Args:
        name: the logged name.
        direction: `"up"` (accuracies), `"down"` (losses) or None (no better way, e.g. a spread).

    Example:

    >>> Directed("student_0_accuracy", "up")._direction
    'up'
    """

    def __init__(self, name, direction=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        if direction not in ("up", "down", None):
            raise ValueError(f"Directed {name}: direction must be 'up', 'down' or None, got {direction!r}.")
        if direction is not None:
            self._direction = direction

    def get_config(self):
        return {**super().get_config(), "direction": getattr(self, "_direction", None)}


class PeerLogs(MetricsList):
    """The trackers of one distiller's logs, one entry of `model.metrics` that logs them all (`result()`: a dict).

    Each tracker is a `keras.metrics.Mean` with the direction Keras's callbacks read (`Directed`): the accuracies go
    up, the cross-entropies and knowledge terms go down, the logit spread has none. Keras's `MonitorCallback`
    (`EarlyStopping`, `ModelCheckpoint(save_best_only=True)`, `ReduceLROnPlateau`) with `mode="auto"` looks for the
    monitored name among the metrics of a `MetricsList` entry of `model.metrics` and reads its `_direction`, so
    `monitor="val_ensemble_accuracy"` (or any `{peer}_accuracy`, `{peer}_ce`, ...) needs no `mode`.

    Args:
        peer_names: `student_{i}` or `branch_{i}` per peer.
        parts: the knowledge parts.
        teacher: whether there is a mean teacher to log.
        name: the group's name.

    Example:

    >>> logs = PeerLogs(["student_0", "student_1"], [], teacher=False)
    >>> [(m.name, getattr(m, "_direction", None)) for m in logs.metrics][-3:]
    [('student_0_accuracy', 'up'), ('student_1_accuracy', 'up'), ('ensemble_accuracy', 'up')]
    """

    def __init__(self, peer_names, parts, teacher, name="peer_logs"):
        groups = [list(peer_names)] + ([[f"teacher_{i}" for i in range(len(peer_names))]] if teacher else [])
        ce = [Directed(f"{p}_ce", "down") for p in peer_names]
        spread = [Directed(f"{p}_logit_std") for p in peer_names]
        accuracy = [[Directed(f"{p}_accuracy", "up") for p in group] for group in groups]
        ensemble = [Directed(f"{'teacher_' if g else ''}ensemble_accuracy", "up") for g in range(len(groups))]
        part_terms = [[Directed(f"{p}_{part.name}", "down") for p in peer_names] for part in parts]
        part_losses = [{n: Directed(f"{part.name}_{n}", "down") for n in part.loss_names} for part in parts]
        flat = [*ce, *spread, *(m for group in accuracy for m in group), *ensemble,
                *(m for terms in part_terms for m in terms), *(m for losses in part_losses for m in losses.values())]
        super().__init__(flat, name=name)
        self.ce, self.spread, self.accuracy, self.ensemble = ce, spread, accuracy, ensemble
        self.part_terms, self.part_losses = part_terms, part_losses

    def result(self):
        return self.get_result()

    def details(self):
        """The names a short progress bar leaves out (`keras_okd.callbacks.ProgressBar`): all but the peers' and the
        ensembles' accuracies. `loss` is Keras's, not one of these."""
        shown = {m.name for m in (*self.accuracy[0], *self.ensemble)}
        return [m.name for m in self.metrics if m.name not in shown]

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
