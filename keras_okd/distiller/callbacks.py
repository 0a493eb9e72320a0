"""What `OnlineDistiller.fit` adds to the user's callbacks (`for_fit`): `KnowledgeSchedule`, which advances the
knowledge parts' schedules at the start of every epoch; `OuterSteps`, which runs the parts' work between training
steps (L-MCL's meta step); `PeerCollapse`, which warns when a peer's predictions collapse; and `ProgressBar`,
Keras's bar showing the loss and the accuracies only.

Also reached as `keras_okd.callbacks`. The schedules themselves (`WarmUp`, `RampUp`, `Decay`) belong to the parts
(`keras_okd.knowledge.schedules`) and are importable here too.

Example:

>>> import keras_okd
>>> from keras_okd.knowledge import WarmUp
>>> cb = keras_okd.callbacks.KnowledgeSchedule({"si": [WarmUp(20)]})
>>> cb.values(0), cb.values(20)
({'si': 0.0}, {'si': 1.0})
"""

import logging
import math

import keras

from keras_okd.knowledge.schedules import Decay, RampUp, Schedule, WarmUp  # noqa: F401 (reached here too)
from keras_okd.knowledge.schedules import deserialize_schedules, schedule_product


class KnowledgeSchedule(keras.callbacks.Callback):
    """Advances the knowledge parts' schedules: at the start of every epoch, sets each scheduled part's `schedule`
    variable to the product of its schedules' values at that epoch (`KnowledgePart.set_schedule`).

    A part owns its schedules (`KnowledgePart(schedule=...)`); `fit` adds this callback when a part has any. At the
    start of `fit` it warns about the parts whose weight is 0 in all the epochs of the fit (a warm-up as long as the
    run, or longer): such a run trains the students exactly as independent training would, and its results cannot
    differ from it. The warning goes where `PeerCollapse`'s go (printed with `verbose > 0`, else the
    `keras_okd.callbacks` logger).

    Args:
        schedules: None (default): every part's own schedules, read from the model (`OnlineDistiller.schedules`).
            Or a dict `{part name: [Schedule, ...]}` to apply instead (another schedule without rebuilding the
            method): the parts it names follow it, the others keep the weight they have.

    Example:

    >>> from keras_okd.knowledge import WarmUp
    >>> cb = KnowledgeSchedule({"ta": [WarmUp(20)], "si": [WarmUp(20)]})
    >>> cb.values(0), cb.values(20)
    ({'ta': 0.0, 'si': 0.0}, {'ta': 1.0, 'si': 1.0})
    >>> cb.idle_parts(20), cb.idle_parts(21)
    (['ta', 'si'], [])
    """

    def __init__(self, schedules=None):
        super().__init__()
        self.given = None if schedules is None else deserialize_schedules(schedules)

    @property
    def schedules(self):
        """`{part name: [Schedule, ...]}`: the dict given, else the model's parts' own."""
        if self.given is not None:
            return self.given
        if self.model is None:
            raise ValueError("KnowledgeSchedule() reads the knowledge parts' schedules from its model: call "
                             "set_model(distiller) first (fit does), or pass the schedules.")
        return self.model.schedules

    def values(self, epoch):
        """`{part name: weight}` for a 0-based `epoch`."""
        return {part: schedule_product(items, epoch) for part, items in self.schedules.items()}

    def idle_parts(self, epochs):
        """The parts whose weight is 0 in every epoch of a run of `epochs` epochs."""
        return [part for part, items in self.schedules.items()
                if all(schedule_product(items, epoch) == 0 for epoch in range(int(epochs)))]

    def on_train_begin(self, logs=None):
        epochs = (self.params or {}).get("epochs") or 0
        idle = self.idle_parts(epochs)
        if idle:
            given = self.schedules
            schedules = "; ".join(f"{part!r}: {', '.join(map(repr, given[part]))}" for part in idle)
            _warn(self, f"keras_okd: knowledge part{'s' * (len(idle) > 1)} {', '.join(map(repr, idle))} "
                        f"{'have' if len(idle) > 1 else 'has'} weight 0 in all {epochs} epochs of this fit "
                        f"({schedules}: a warm-up as long as the run or longer), so the students train exactly as "
                        "independent training would. Train for more epochs than the warm-up, or shorten it (TSB: "
                        "warmup_epochs; the CLI demo: --warmup-epochs).")

    def on_epoch_begin(self, epoch, logs=None):
        parts = {part.name: part for part in self.model.knowledge}
        for name, value in self.values(epoch).items():
            if name not in parts:
                raise ValueError(
                    f"KnowledgeSchedule: no knowledge part named {name!r}; the model has {sorted(parts)}."
                )
            parts[name].set_schedule(value)


class OuterSteps(keras.callbacks.Callback):
    """Runs the knowledge parts' work outside the gradient step (`KnowledgePart.outer_every` / `outer_step`, e.g.
    L-MCL's meta-optimised pair weights): after batches 0, N, 2N, ... of every epoch, on that batch read again.

    `fit` adds it, with its training data, when a part has `outer_every`. It runs on one device only.

    Args:
        parts: the parts with `outer_every`.
        batch_again: `batch_again(epoch, batch)` -> `(inputs, labels)`, the training batch
            (`keras_okd.distiller.inputs.batch_again` on fit's data).

    Example:

    >>> class Every2:  # a part's contract: a name, outer_every, outer_step(model, inputs, labels)
    ...     name, outer_every, seen = "every2", 2, []
    ...     def outer_step(self, model, inputs, labels):
    ...         self.seen.append((inputs, labels))
    >>> part = Every2()
    >>> cb = OuterSteps([part], batch_again=lambda epoch, batch: (f"x[{epoch},{batch}]", f"y[{epoch},{batch}]"))
    >>> cb.on_epoch_begin(3)
    >>> for batch in range(5):
    ...     cb.on_train_batch_end(batch)
    >>> part.seen
    [('x[3,0]', 'y[3,0]'), ('x[3,2]', 'y[3,2]'), ('x[3,4]', 'y[3,4]')]
    """

    def __init__(self, parts, batch_again):
        super().__init__()
        self.parts, self.batch_again, self.epoch = list(parts), batch_again, 0

    def on_train_begin(self, logs=None):
        from keras_okd import backend

        if backend.num_replicas() > 1:
            raise ValueError(f"{', '.join(p.name for p in self.parts)}: the work between steps (outer_every) runs on "
                             "one device; train without a multi-device strategy.")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        due = [part for part in self.parts if batch % part.outer_every == 0]
        if due:
            inputs, labels = self.batch_again(self.epoch, batch)
            for part in due:
                part.outer_step(self.model, inputs, labels)


def for_method(distiller):
    """The callbacks a preset's paper recipe needs (its parts' schedules), to pass to `fit`.

    `OnlineDistiller.fit` adds them by itself when no `KnowledgeSchedule` is given, so this is for users who want to
    see, change or combine them.

    Args:
        distiller: an `OnlineDistiller`.

    Returns:
        A list of Keras callbacks: one `KnowledgeSchedule` of the parts' schedules, or none when no part has any.

    Example:

    ```python
    students = [keras_okd.models.get("simple_cnn", num_classes=10) for _ in range(2)]
    distiller = keras_okd.methods.tsb(students, num_train_samples=1_000, warmup_epochs=2)
    callbacks = keras_okd.callbacks.for_method(distiller)   # [KnowledgeSchedule]: TSB's KD warm-up
    callbacks[0].set_model(distiller)
    callbacks[0].values(0)                                   # {'ta': 0.0, 'si': 0.0}: the weights at epoch 0
    distiller.compile(optimizer="sgd")
    distiller.fit(keras_okd.data.with_index(train_ds), epochs=2, callbacks=callbacks)
    ```
    """
    return [KnowledgeSchedule()] if distiller.schedules else []


# ---------------------------------------------------------------------------------------------------------- health
# The logger keeps the name it had before the callbacks moved into keras_okd.distiller: users configure it by name.
_collapse_logger = logging.getLogger("keras_okd.callbacks")  # a child of the "keras_okd" logger

COLLAPSE_REMEDIES = (
    "lower the learning rate; delay the distillation terms with a KD warm-up or ramp-up (TSB: warmup_epochs; ONE, "
    "PCL, DKEL: rampup_epochs; any method: a KnowledgeSchedule with WarmUp or RampUp); a higher KD temperature "
    "(softer peer targets)"
)


def _warn(callback, message):
    """Print `message` when the callback's `fit` runs with `verbose > 0`, else log it at WARNING level (shown once)."""
    verbose = callback.params.get("verbose", 0) if callback.params else 0
    shown = verbose not in (0, False, None)
    if shown:
        print(message, flush=True)
    # with no handler configured, Python's last-resort handler would print it to stderr a second time
    if not shown or _collapse_logger.hasHandlers():
        _collapse_logger.warning(message)


def collapse_kind(ce, accuracy, logit_std, num_classes, ce_tolerance=0.05, accuracy_factor=1.5, spread=0.5):
    """Whether one epoch's training logs of a peer show a collapsed peer, and of which kind.

    A peer has collapsed when it predicts no better than chance, in accuracy and in cross-entropy:
    `accuracy <= accuracy_factor / C` and `ce >= (1 - ce_tolerance) * ln C`. Its logit spread (the batch mean of the
    standard deviation of its logits over the classes) tells the kind: `"uniform"` (spread <= `spread`: about the
    same probability for every class, cross-entropy near ln C, nothing to learn from) or `"constant"` (a larger spread
    at chance accuracy: confident predictions that do not depend on the input, e.g. always the same class).

    Args:
        ce: the epoch's mean training cross-entropy of the peer (`{peer}_ce`).
        accuracy: its mean training accuracy (`{peer}_accuracy`), in [0, 1].
        logit_std: its mean logit spread (`{peer}_logit_std`).
        num_classes: C.
        ce_tolerance: relative tolerance below ln C.
        accuracy_factor: accuracy bound as a multiple of chance (1 / C).
        spread: logit spread at or below which the output is called uniform (measured: 0.00-0.09 for peers collapsed
            to uniform output, 2.0-5.3 for peers at chance with confident output).

    Returns:
        `"uniform"`, `"constant"` or None (not collapsed).

    Example:

    >>> collapse_kind(2.3026, 0.100, 0.001, 10), collapse_kind(2.9, 0.098, 3.5, 10), collapse_kind(0.9, 0.70, 2.0, 10)
    ('uniform', 'constant', None)
    """
    chance_ce = math.log(num_classes)
    if not (accuracy <= accuracy_factor / num_classes and ce >= (1.0 - ce_tolerance) * chance_ce):
        return None
    return "uniform" if logit_std <= spread else "constant"


@keras.saving.register_keras_serializable(package="keras_okd")
class PeerCollapse(keras.callbacks.Callback):
    """Warns, once per peer, when a peer's predictions have collapsed to uniform or constant output during `fit`.

    After every epoch it reads the logs `OnlineDistiller` writes for each peer (`{peer}_ce`, `{peer}_accuracy`,
    `{peer}_logit_std`; peers are `student_{i}` or `branch_{i}`) and applies `collapse_kind` with the distiller's
    `num_classes`. A peer that meets the test for `patience` consecutive epochs gets one warning naming the peer, the
    epoch (1-based, as Keras's progress bar counts), the values against ln C and chance, and the usual remedies. A
    collapsed peer stops learning from the labels (its cross-entropy sits at ln C) and, in online distillation, hands
    its peers uniform or meaningless targets: DML at a high learning rate, or PCL's failure that DKEL studies.

    The message goes to the `keras_okd.callbacks` logger (a child of `keras_okd`) at WARNING level, and is printed
    when `fit` runs with `verbose > 0`. With no logging configured and `verbose=0`, Python's last-resort handler
    still shows it on stderr; with no logging configured and `verbose > 0` it is printed once, not twice.

    Defaults, from measured runs (`benchmarks/fashion_mnist_recipe.py`, and the `history.csv` of `keras-okd train
    --config configs/digits/dml.yaml --seed S` and of the DKEL probe in configs/fashion_mnist/dkel.yaml's header):
    a peer whose classifier outputs zeros logs CE 2.3026 (= ln 10), chance accuracy and spread 0.0000. DKEL without
    its ramp-up on Fashion-MNIST collapsed for good: epoch 1 at chance with confident output (CE 5.8-6.4, spread
    3.8-5.3), epochs 2 and 3 at CE 2.30-2.31, accuracy 9.0-10.4%, spread 0.02-0.09. Healthy peers were far above
    1.5 / C after their first epochs, but DML's students on the digits (seeds 0-4) met the test in their first one or
    two epochs (e.g. CE 4.29, accuracy 10.6%, spread 2.29, then CE 2.29, accuracy 9.7%, spread 0.14) before learning
    (16% and CE 2.19-2.22 at the third epoch, 95.8-98.3% validation accuracy at the end), and on Fashion-MNIST at
    lr 0.05 a DML student met it in its first epoch only; hence `patience=3`.

    Args:
        ce_tolerance: the cross-entropy must be at least `(1 - ce_tolerance) * ln C`.
        accuracy_factor: the training accuracy must be at most `accuracy_factor / C`.
        spread: logit spread at or below which a collapsed peer's output is called uniform (else constant).
        patience: consecutive epochs the test must hold before the warning (3: DML's students often sit at chance
            for their first one or two epochs and then learn; that is not reported).

    Attributes:
        warned: `{peer name: (1-based epoch, kind)}` of the peers warned about.

    Example:

    ```python
    distiller.fit(train, epochs=15, callbacks=[keras_okd.callbacks.PeerCollapse()])
    ```
    """

    def __init__(self, ce_tolerance=0.05, accuracy_factor=1.5, spread=0.5, patience=3):
        super().__init__()
        if not 0.0 <= float(ce_tolerance) < 1.0:
            raise ValueError(f"PeerCollapse: ce_tolerance must be in [0, 1), got {ce_tolerance}.")
        if not float(accuracy_factor) >= 1.0:
            raise ValueError(f"PeerCollapse: accuracy_factor must be >= 1 (a multiple of chance), got "
                             f"{accuracy_factor}.")
        if not float(spread) >= 0.0:
            raise ValueError(f"PeerCollapse: spread must be >= 0, got {spread}.")
        if int(patience) < 1:
            raise ValueError(f"PeerCollapse: patience must be >= 1, got {patience}.")
        self.ce_tolerance, self.accuracy_factor = float(ce_tolerance), float(accuracy_factor)
        self.spread, self.patience = float(spread), int(patience)
        self.warned = {}
        self._streak = {}

    def on_train_begin(self, logs=None):
        self.warned, self._streak = {}, {}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        num_classes = getattr(self.model, "num_classes", None)
        for peer in getattr(self.model, "peer_names", ()):
            keys = (f"{peer}_ce", f"{peer}_accuracy", f"{peer}_logit_std")
            if peer in self.warned or num_classes is None or any(key not in logs for key in keys):
                continue
            ce, accuracy, spread = (float(logs[key]) for key in keys)
            kind = collapse_kind(ce, accuracy, spread, num_classes, self.ce_tolerance, self.accuracy_factor,
                                 self.spread)
            self._streak[peer] = self._streak.get(peer, 0) + 1 if kind else 0
            if kind and self._streak[peer] >= self.patience:
                self.warned[peer] = (epoch + 1, kind)
                self._warn(self._message(peer, epoch + 1, kind, ce, accuracy, spread, num_classes, logs))

    @staticmethod
    def _message(peer, epoch, kind, ce, accuracy, spread, num_classes, logs):
        what = ("uniform predictions (the same probability for every class)" if kind == "uniform" else
                "constant predictions (confident, but no better than chance: they do not depend on the input)")
        validation = logs.get(f"val_{peer}_accuracy")
        shown = f", validation accuracy {100 * float(validation):.2f}%" if validation is not None else ""
        return (f"keras_okd: peer {peer} has collapsed to {what} at epoch {epoch}: training cross-entropy {ce:.4f} "
                f"(ln {num_classes} = {math.log(num_classes):.4f}), training accuracy {100 * accuracy:.2f}% (chance "
                f"{100 / num_classes:.2f}%){shown}, logit spread {spread:.4f}. Training goes on, but this peer no "
                f"longer learns from the labels and hands its peers meaningless targets. Usual remedies: "
                f"{COLLAPSE_REMEDIES}.")

    def _warn(self, message):
        _warn(self, message)

    def get_config(self):
        return {"ce_tolerance": self.ce_tolerance, "accuracy_factor": self.accuracy_factor, "spread": self.spread,
                "patience": self.patience}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class ProgressBar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, without the logged values named in `hidden` (and their `val_` twins).

    `OnlineDistiller.fit` uses it (`progress="short"`) to show the loss and the peers' and ensembles' accuracies
    only: a distiller logs a cross-entropy, a logit spread and a term per knowledge part for every peer (25 values
    for TSB with two students), too many for one line. Only the display changes: `History`, `CSVLogger`, TensorBoard
    and every other callback still receive every value.

    Args:
        hidden: the names to leave out.

    Example:

    ```python
    bar = keras_okd.callbacks.ProgressBar(hidden=distiller.logs.details())
    distiller.fit(train, epochs=3, callbacks=[bar])      # what fit(progress="short") does by itself
    ```
    """

    def __init__(self, hidden=()):
        super().__init__()
        self.hidden = frozenset(hidden)

    def _shown(self, logs):
        return None if logs is None else {k: v for k, v in logs.items() if k.removeprefix("val_") not in self.hidden}

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._shown(logs))

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(batch, self._shown(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._shown(logs))

    def on_test_end(self, logs=None):
        super().on_test_end(self._shown(logs))


PROGRESS = ("short", "all")


def for_fit(distiller, callbacks, monitor_collapse=True, progress="short"):
    """`callbacks` plus what `OnlineDistiller.fit` adds: a `KnowledgeSchedule` of the parts' schedules (unless
    one is given), a `PeerCollapse` monitor (unless one is given or `monitor_collapse` is False) and, with
    `progress="short"`, a `ProgressBar` that shows the loss and the accuracies only (unless a
    `keras.callbacks.ProgbarLogger` is given).

    Args:
        distiller: an `OnlineDistiller` (its `schedules` and `logs` are read).
        callbacks: the user's callbacks (a list, or None).
        monitor_collapse: add a `PeerCollapse` when none is given.
        progress: `"short"` (the loss, the peers' and ensembles' accuracies) or `"all"` (Keras's own bar: every
            logged value).

    Raises:
        ValueError: another `progress`.

    Returns:
        A new list: `callbacks` followed by what was added; the given list is not changed.

    Example:

    ```python
    distiller = keras_okd.methods.dml([keras_okd.models.get("simple_cnn", num_classes=10) for _ in range(2)])
    keras_okd.callbacks.for_fit(distiller, [keras.callbacks.CSVLogger("log.csv")])
    # [CSVLogger, ProgressBar, PeerCollapse]: DML has no schedules
    keras_okd.callbacks.for_fit(distiller, None, monitor_collapse=False, progress="all")   # []
    ```
    """
    if progress not in PROGRESS:
        raise ValueError(f"progress must be one of {PROGRESS} (short: the loss and the accuracies; all: every logged "
                         f"value), got {progress!r}.")
    callbacks = list(callbacks or [])
    if progress == "short" and not any(isinstance(c, keras.callbacks.ProgbarLogger) for c in callbacks):
        callbacks.append(ProgressBar(distiller.logs.details()))
    if distiller.schedules and not any(isinstance(c, KnowledgeSchedule) for c in callbacks):
        callbacks.append(KnowledgeSchedule())
    if monitor_collapse and not any(isinstance(c, PeerCollapse) for c in callbacks):
        callbacks.append(PeerCollapse())
    return callbacks
