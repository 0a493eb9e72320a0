"""The mean teacher (PCL, DKEL): an exponential moving average of the student network(s).

`t = eta * s + (1 - eta) * t` after every optimizer step, over every float weight, batch-norm moving statistics
included; the teacher runs in inference mode, so its forward pass changes nothing. Because Keras applies the optimizer
after `compute_loss`, the update owed for step k is applied at the start of step k + 1, before its forward pass reads
the teacher or moves the students' batch-norm statistics: `owe(finite)` records that an update is owed (none for a
step skipped for a non-finite loss), `catch_up()` applies it in the next training step (the distiller's
`begin_training_step`, which its `train_step` runs first), and `sync()` applies it
before validation, `evaluate`, `predict`, exports and at the end of `fit`. Whenever the teacher is read it is
therefore the EMA of every optimizer step taken.

EMA warm-up (`warmup=True`): the k-th update (k = 0, 1, ...) uses `max(1 / (k + 2), eta)` instead of `eta`, the
mean-teacher schedule that DKEL's code uses with `1 / (k + 1)`; `k + 2` keeps half of the decoupled initialisation
on the first update where `k + 1` would overwrite it with the student. With a constant eta = 0.001 the teacher is
still ~68% its initialisation after one CIFAR epoch at batch 128.

DKEL's decoupled initialisation (`initialize`): copy the students into the teacher, then train the teacher alone with
cross-entropy for a few batches at a small learning rate (paper: 1 step at lr 0.01), once, before training.
"""

import keras
from keras import ops

from keras_okd import backend


def check_teacher_arguments(teacher_eta, init_steps, init_learning_rate, deploy):
    """Refuse a deployed teacher without a `teacher_eta`, and a decoupled initialisation of negative length or rate."""
    if deploy not in ("students", "teacher") or (deploy == "teacher" and teacher_eta is None):
        raise ValueError(f"deploy must be 'students', or 'teacher' with a teacher_eta; got {deploy!r}.")
    if int(init_steps) < 0 or not float(init_learning_rate) > 0:
        raise ValueError(f"teacher_init_steps must be >= 0 and teacher_init_learning_rate > 0; got "
                         f"{init_steps} and {init_learning_rate}.")


@keras.saving.register_keras_serializable(package="keras_okd")
class MeanTeacher(keras.layers.Layer):
    """An EMA copy of `networks`, frozen (never trained by the optimizer).

    Args:
        networks: the student network(s) to copy (the distiller's students, or its one multi-branch student).
        eta: the EMA step in (0, 1].
        warmup: use `max(1 / (k + 2), eta)` for the k-th update (see the module docstring).

    Attributes:
        networks: the teacher's copies, same architecture and (initially) weights, new variables.

    Example:

    >>> import keras_okd
    >>> students = [keras_okd.models.get("simple_cnn") for _ in range(2)]
    >>> teacher = MeanTeacher(students, eta=0.5)
    >>> teacher.update(students)     # t = 0.5 * s + 0.5 * t (here t == s)
    """

    def __init__(self, networks, eta, warmup=False, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        eta = float(eta)
        if not 0.0 < eta <= 1.0:
            raise ValueError(f"teacher_eta (the EMA step t = eta*s + (1-eta)*t) must lie in (0, 1], got {eta}.")
        self.eta = eta
        self.warmup = bool(warmup)
        self.networks = [_frozen_copy(n) for n in networks]
        self.pending = self.add_weight(shape=(), initializer="zeros", dtype="float32", trainable=False, name="pending")
        self.updates = self.add_weight(shape=(), initializer="zeros", dtype="float32", trainable=False, name="updates")
        self.initialized = self.add_weight(shape=(), initializer="zeros", dtype="int32", trainable=False,
                                           name="initialized")
        self.built = True

    def pairs(self, students):
        """`(student weight, teacher weight)` of every float weight, trainable or not (BN statistics included)."""
        return [(s, t) for net, teacher in zip(students, self.networks) for s, t in zip(net.weights, teacher.weights)
                if "float" in str(t.dtype)]

    def rate(self):
        """The EMA step of the next update: eta, or during warm-up `max(1 / (k + 2), eta)`."""
        if not self.warmup:
            return ops.convert_to_tensor(self.eta, "float32")
        return ops.maximum(1.0 / (ops.cast(self.updates, "float32") + 2.0), self.eta)

    def update(self, students, amount=None):
        """`t <- t + amount * (s - t)` over every pair, as one fused update (`amount` defaults to `rate()`)."""
        amount = self.rate() if amount is None else amount
        pairs = self.pairs(students)
        backend.lerp_variables([t for _, t in pairs], [s for s, _ in pairs], amount)
        self.updates.assign(self.updates + ops.cast(amount > 0, "float32"))

    def catch_up(self, students):
        """Inside a training step, before the forward pass: apply the update owed for the previous optimizer step
        (`amount = rate * pending`, zero when nothing is owed, so the compiled step has no branch)."""
        self.update(students, self.rate() * self.pending)

    def owe(self, finite):
        """Record that the optimizer step about to run (skipped when `finite` is False) is owed to the teacher."""
        self.pending.assign(ops.cast(finite, "float32"))

    def sync(self, students):
        """Apply the pending update now, outside a training step; a no-op when none is pending."""
        if float(ops.convert_to_numpy(self.pending)) > 0:
            self.update(students)
            self.pending.assign(0.0)

    @property
    def is_initialized(self):
        return bool(int(ops.convert_to_numpy(self.initialized)))

    def initialize(self, students, batches, learning_rate, multi_branch=False):
        """DKEL's decoupled initialisation: copy `students` into the teacher, then train the teacher alone with the
        sum of its peers' cross-entropies on `batches` (a list of `(inputs, labels)`) with plain SGD.

        The sum (Keras's sum of a multi-output model's losses) gives each teacher peer's own weights exactly the step
        `-lr * grad CE_p` at the paper's lr 0.01 ("optimize all peers of t with cross entropy loss", Algorithm 1).
        DKEL's public code averages them; for plain SGD a mean at lr `a` is a sum at lr `a / m` (see
        `keras_okd.methods.dkel`).

        Args:
            students: the student network(s).
            batches: the training batches to use.
            learning_rate: SGD learning rate (paper: 0.01).
            multi_branch: whether the networks are one multi-branch student.
        """
        classifier = self._classifier(multi_branch)
        for s, t in self.pairs(students):
            t.assign(ops.copy(s))  # a copy: under JAX the teacher's buffers are donated when it trains below
        m = len(classifier.outputs)
        classifier.compile(
            optimizer=keras.optimizers.SGD(learning_rate),
            loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * m,
        )
        for network in self.networks:
            network.trainable = True
        try:
            for inputs, labels in batches:
                inputs = [inputs] * len(classifier.inputs) if len(classifier.inputs) > 1 else inputs
                classifier.train_on_batch(inputs, [labels] * m)
        finally:
            for network in self.networks:
                network.trainable = False
        self.initialized.assign(1)


    def _classifier(self, multi_branch):
        """A functional view of the teacher's networks: inputs -> list of M logits (shares their layers)."""
        if multi_branch:
            network = self.networks[0]
            return TeacherClassifier(network.inputs, list(network.output["logits"]), name="teacher_init")
        inputs = keras.Input(shape=tuple(self.networks[0].inputs[0].shape[1:]))
        return TeacherClassifier(inputs, [t(inputs) for t in self.networks], name="teacher_init")


class TeacherClassifier(keras.Model):
    """A functional model whose step logs survive `MultiWorkerMirroredStrategy` (see `backend.logs_for_replicas`):
    the teacher's networks as inputs -> list of M logits, for the decoupled initialisation."""

    def compute_metrics(self, *args, **kwargs):
        return backend.logs_for_replicas(super().compute_metrics(*args, **kwargs))


def _frozen_copy(network):
    """An independent copy of `network` (same architecture and weights, new variables), frozen."""
    teacher = keras.models.clone_model(network)
    teacher.set_weights(network.get_weights())
    teacher.name = f"teacher_{network.name}"
    teacher.trainable = False
    return teacher
