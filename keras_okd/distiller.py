"""`OnlineDistiller`: one `keras.Model` that trains a group of peers together with online knowledge distillation.

Design choice: the distiller overrides `compute_loss` (and `compute_metrics`), not `train_step`. Keras's own
`train_step` of each backend (tf.GradientTape, jax.value_and_grad over a stateless call, torch autograd) runs the
forward pass through `call`, which returns every peer's logits, then calls `compute_loss`, then applies the optimizer.
So the whole step is written once in `keras.ops` and every backend runs it with its default compilation
(tf.function, jax.jit, torch eager). State that changes during a step (the temporal accumulator's bank and counts) is
written inside `compute_loss` through non-trainable variables, which Keras carries out of the JAX stateless call like
batch-norm statistics; writes happen only when `training=True`, so `evaluate` and `predict` never change it.

The mean teacher (PCL, DKEL) is an EMA copy of the student network(s): `t = eta * s + (1 - eta) * t` after every
optimizer step, over every float weight, batch-norm moving statistics included, and it runs in inference mode, so its
forward pass changes nothing. Because the optimizer step happens after `compute_loss`, the update owed for step k is
applied at the start of step k + 1's forward pass, before anything reads the teacher or the students' batch-norm
statistics move; a `teacher_pending` variable records that an update is owed, and `sync_teacher()` applies it before
validation, `evaluate`, `predict`, exports and at the end of `fit`. The teacher therefore never lags: whenever it is
read it is the EMA of every optimizer step taken (a step skipped for a non-finite loss owes no update).

Bad input is refused before any state changes: structural problems (fewer than two students, class counts that
differ, a part that needs indices fed data without them, labels of the wrong shape) raise while the model is built or
the step is traced; value problems (an index outside `[0, num_samples)`, a label outside `[0, classes)`) are checked
in the input pipeline, before the batch reaches the step. A non-finite loss skips the optimizer update (Keras's
`LossScaleOptimizer` at a fixed scale of 1, the same mechanism `mixed_float16` uses) and the bank writes, then `fit`
raises `FloatingPointError` naming the terms that went non-finite; with `keras.callbacks.TerminateOnNaN` among the
callbacks, training stops quietly instead.
"""

import logging
import math

import keras
import numpy as np
from keras import ops

from keras_okd import backend
from keras_okd import callbacks as okd_callbacks
from keras_okd.knowledge.base import KnowledgePart
from keras_okd.losses import ensemble_probabilities, pairwise_kd, peer_cross_entropy

_CHECK_MARKER = "keras_okd input check: "
_logger = logging.getLogger("keras_okd")


@keras.saving.register_keras_serializable(package="keras_okd")
class OnlineDistiller(keras.Model):
    """Trains M >= 2 peers together: each learns from the labels (cross-entropy) and from soft targets that a list of
    knowledge parts builds from the peers' outputs.

    Peers are M independent students (a list of `keras.Model`s, architectures may differ) or the M branches of one
    multi-branch student (`keras_okd.models.multi_branch`). Loss of a step:
    `ce_weight * sum_i CE_i + sum_parts weight * schedule * sum_i KD_part(i) + parts' own losses`, where
    `KD_part(i) = sum_j W[i, j] * tau^2 * KL(target_j || softmax(z_i / tau))` (see `keras_okd.knowledge`).

    Data: `x` is the images, or a dict `{"inputs": images, "index": sample indices}` as made by
    `keras_okd.data.with_index`; `y` is integer class ids. Parts that keep per-sample state (the temporal
    accumulator) need the index.

    Logs (fit and evaluate): `loss` (total); per peer `student_{i}_ce` (`branch_{i}_...` for branches),
    `student_{i}_{part}` (the part's KD term before weight and schedule), `student_{i}_accuracy` and
    `student_{i}_logit_std` (batch mean of the standard deviation of the peer's logits over classes; near zero for a
    peer collapsed to uniform output);
    `ensemble_accuracy` (mean of the peers' probabilities); each part's own losses as `{part}_{name}`; with a mean
    teacher `teacher_{i}_accuracy` and `teacher_ensemble_accuracy`.

    Args:
        students: a list of 2 or more `keras.Model`s mapping the same inputs to logits over the same classes (a
            student whose name repeats an earlier one's is renamed `{name}_{i}`), or one multi-branch model.
        knowledge: list of `keras_okd.knowledge.KnowledgePart`s with distinct names; empty trains the peers
            independently (CE only) in one model.
        schedules: dict `{part name: [keras_okd.callbacks.Schedule, ...]}` applied at each epoch start by
            `keras_okd.callbacks.KnowledgeSchedule` (added by `fit` when you pass none).
        views: per-peer augmentation (any Keras layer, e.g. `keras_okd.data.peer_views`), applied independently for
            each peer inside the training step; None feeds every peer the same batch.
        teacher_eta: keep a mean teacher, `t = eta * s + (1 - eta) * t` after every step, eta in (0, 1]; None for none.
        teacher_init_steps: DKEL's decoupled initialisation: CE steps of the teacher alone before training (0: none).
        teacher_init_learning_rate: learning rate of those steps.
        deploy: `"students"` or `"teacher"`: which networks `predict`, `peer_model` and `ensemble_model` use.
        ce_weight: factor of the peers' cross-entropy (KDCL: 1 - alpha).
        name: model name.

    Example:

    ```python
    import keras, keras_okd
    students = [keras_okd.models.get("simple_cnn", num_classes=10), keras_okd.models.get("simple_cnn", num_classes=10)]
    distiller = keras_okd.OnlineDistiller(students, knowledge=[keras_okd.knowledge.PeerDistillation()])
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    (x, y), (x_val, y_val) = keras_okd.data.digits_arrays()
    distiller.fit(x, y, validation_data=(x_val, y_val), epochs=2, batch_size=64)
    probabilities = distiller.predict(x_val)          # the ensemble's probabilities
    distiller.students[0].save("student0.keras")      # a plain Keras model
    ```
    """

    def __init__(
        self,
        students,
        knowledge=(),
        schedules=None,
        views=None,
        teacher_eta=None,
        teacher_init_steps=0,
        teacher_init_learning_rate=0.01,
        deploy="students",
        ce_weight=1.0,
        name="online_distiller",
        **kwargs,
    ):
        # The distiller itself always computes in float32: under a mixed policy Keras would otherwise read float32
        # variables in the compute dtype inside `call`, where the teacher's EMA runs. The students keep their own
        # (mixed) policies and autocast inside their own calls.
        kwargs["dtype"] = "float32"
        super().__init__(name=name, **kwargs)
        self.multi_branch = isinstance(students, keras.Model) and _is_multi_branch(students)
        if self.multi_branch:
            networks = [students]
            peer_count = len(students.output["logits"])
            classes = [_logits_classes(t, students, i) for i, t in enumerate(students.output["logits"])]
            self._per_branch_inputs = len(students.inputs) > 1
            if peer_count < 2:
                raise ValueError(f"The multi-branch student {students.name} has {peer_count} branch; 2 or more needed.")
        else:
            networks = list(students) if isinstance(students, (list, tuple)) else [students]
            if len(networks) < 2:
                raise ValueError(
                    f"OnlineDistiller needs at least 2 students, got {len(networks)}. Online distillation trains a "
                    "group of networks together; to train one network alone, call its own fit(). For the branches "
                    "of one network, pass a keras_okd.models.multi_branch model."
                )
            for i, student in enumerate(networks):
                if not isinstance(student, keras.Model):
                    raise TypeError(f"students[{i}] must be a keras.Model, got {type(student).__name__}.")
            classes = [_num_classes(s, i) for i, s in enumerate(networks)]
            peer_count = len(networks)
            self._per_branch_inputs = False
        if len(set(classes)) != 1:
            raise ValueError(
                f"All peers must output logits over the same classes; got class counts {classes}. "
                "Give every student the same num_classes."
            )
        knowledge = list(knowledge or ())
        for part in knowledge:
            if not isinstance(part, KnowledgePart):
                raise TypeError(f"knowledge parts must be KnowledgePart instances, got {type(part).__name__}.")
        names = [part.name for part in knowledge]
        if len(set(names)) != len(names):
            raise ValueError(f"Knowledge part names must be distinct (they name the logs); got {names}.")
        schedules = okd_callbacks.deserialize_schedules(schedules)
        unknown = sorted(set(schedules) - set(names))
        if unknown:
            raise ValueError(f"schedules name parts {unknown} that are not among the knowledge parts {names}.")
        if views is not None and self.multi_branch and not self._per_branch_inputs:
            raise ValueError(
                "Per-peer views need one input per branch: build the student with "
                "keras_okd.models.multi_branch(..., per_branch_inputs=True)."
            )
        if teacher_eta is not None and not 0.0 < float(teacher_eta) <= 1.0:
            raise ValueError(f"teacher_eta (the EMA step t = eta*s + (1-eta)*t) must lie in (0, 1], got {teacher_eta}.")
        needing_teacher = [part.name for part in knowledge if part.needs_teacher]
        if needing_teacher and teacher_eta is None:
            raise ValueError(f"Knowledge parts {needing_teacher} read the mean teacher: pass teacher_eta (e.g. 0.001).")
        if deploy not in ("students", "teacher") or (deploy == "teacher" and teacher_eta is None):
            raise ValueError(f"deploy must be 'students', or 'teacher' with a teacher_eta; got {deploy!r}.")
        if int(teacher_init_steps) < 0 or not float(teacher_init_learning_rate) > 0:
            raise ValueError("teacher_init_steps must be >= 0 and teacher_init_learning_rate > 0.")
        if not float(ce_weight) >= 0:
            raise ValueError(f"ce_weight must be >= 0, got {ce_weight}.")

        if not self.multi_branch:
            _make_names_unique(networks)
        self.students = networks
        self.knowledge = knowledge
        self.schedules = schedules
        self.views = views
        self.teacher_eta = None if teacher_eta is None else float(teacher_eta)
        self.teacher_init_steps = int(teacher_init_steps)
        self.teacher_init_learning_rate = float(teacher_init_learning_rate)
        self.deploy = deploy
        self.ce_weight = float(ce_weight)
        self.num_peers = peer_count
        self.num_classes = classes[0]
        prefix = "branch" if self.multi_branch else "student"
        self.peer_names = [f"{prefix}_{i}" for i in range(self.num_peers)]
        self.teachers = [_clone_as_teacher(n) for n in networks] if teacher_eta is not None else []
        if self.teachers:
            self._teacher_pending = self.add_weight(
                shape=(), initializer="zeros", dtype="float32", trainable=False, name="teacher_pending"
            )
            self._teacher_initialized = self.add_weight(
                shape=(), initializer="zeros", dtype="int32", trainable=False, name="teacher_initialized"
            )
        feature_shapes = None
        if self.multi_branch:
            feature_shapes = {
                "features": [tuple(t.shape) for t in networks[0].output["features"]],
                "shared_features": tuple(networks[0].output["shared_features"].shape),
            }
        for part in knowledge:
            part.build_for_peers(self.num_peers, self.num_classes, feature_shapes)
        samples = [part.num_samples for part in knowledge if part.needs_index]
        self.num_train_samples = min(samples) if samples else None

        tracked = [("", self.peer_names)] + ([("teacher_", [f"teacher_{i}" for i in range(peer_count)])]
                                             if self.teachers else [])
        self._ce_trackers = [keras.metrics.Mean(name=f"{p}_ce") for p in self.peer_names]
        self._spread_trackers = [keras.metrics.Mean(name=f"{p}_logit_std") for p in self.peer_names]
        self._accuracy_trackers = [
            [keras.metrics.Mean(name=f"{p}_accuracy") for p in peers] for _, peers in tracked
        ]
        self._ensemble_trackers = [keras.metrics.Mean(name=f"{pre}ensemble_accuracy") for pre, _ in tracked]
        self._kd_trackers = [
            [keras.metrics.Mean(name=f"{p}_{part.name}") for p in self.peer_names] for part in knowledge
        ]
        self._part_loss_trackers = [
            {n: keras.metrics.Mean(name=f"{part.name}_{n}") for n in part.loss_names} for part in knowledge
        ]
        if all(n.built for n in networks):
            self.built = True

    def _track_variables(self):
        # Called by Keras's torch backend only: register every peer's variables with torch, even when peers of the
        # same architecture share variable paths (see keras_okd.backend.torch_parameters_by_position).
        self._torch_params = backend.torch_parameters_by_position(self.variables)

    # ------------------------------------------------------------------ forward
    def _peer_views(self, images, training):
        """One input per peer: independent augmentations of the batch in training when `views` is set."""
        if training and self.views is not None:
            return [self.views(images, training=True) for _ in range(self.num_peers)]
        return [images] * self.num_peers

    def _forward(self, networks, views, training):
        """Logits `(B, M, C)` of `networks` (the students or the teachers), plus features of a multi-branch net."""
        if self.multi_branch:
            out = networks[0](views if self._per_branch_inputs else views[0], training=training)
            logits = out["logits"]
            extra = {"features": list(out["features"]), "shared_features": out["shared_features"]}
        else:
            logits = [networks[i](views[i], training=training) for i in range(self.num_peers)]
            extra = {}
        return ops.stack([ops.cast(z, "float32") for z in logits], axis=1), extra

    def call(self, inputs, training=None):
        """Run every peer on its view, and the teacher (after its pending EMA update, in training).

        Returns a dict: `"probabilities"` `(B, C)`, the deployed ensemble (mean of the students' probabilities, or
        outside training of the teacher's with `deploy="teacher"`); `"peer_logits"` `(B, M, C)`; with a teacher,
        `"teacher_logits"` (no gradient); with a multi-branch student, `"features"` and `"shared_features"`. `predict` returns the
        probabilities alone.
        """
        images, _ = _split_inputs(inputs)
        views = self._peer_views(images, training)
        if self.teachers and training:
            self._ema_step(self.teacher_eta * self._teacher_pending)
        peer_logits, out = self._forward(self.students, views, training)
        out["peer_logits"] = peer_logits
        out["probabilities"] = ensemble_probabilities(peer_logits)
        if self.teachers:
            out["teacher_logits"] = ops.stop_gradient(self._forward(self.teachers, views, False)[0])
            if self.deploy == "teacher" and not training:
                out["probabilities"] = ensemble_probabilities(out["teacher_logits"])
        return out

    # ------------------------------------------------------------------ mean teacher
    def _weight_pairs(self):
        """(student weight, teacher weight) pairs of every float weight, trainable or not (BN statistics included)."""
        for net, teacher in zip(self.students, self.teachers):
            for s, t in zip(net.weights, teacher.weights):
                if "float" in str(t.dtype):
                    yield s, t

    def _ema_step(self, amount):
        """t <- t + amount * (s - t), i.e. t = eta*s + (1-eta)*t for amount = eta."""
        for s, t in self._weight_pairs():
            t.assign(t + ops.cast(amount, t.dtype) * (ops.stop_gradient(ops.cast(s, t.dtype)) - t))

    def sync_teacher(self):
        """Apply the teacher's pending EMA update now (see the module docstring); a no-op when none is pending.

        `fit` calls it before validation and at the end of training, `evaluate` and `predict` before they run, so
        the teacher one reads is always the EMA of every optimizer step taken.
        """
        if self.teachers and float(ops.convert_to_numpy(self._teacher_pending)) > 0:
            self._ema_step(self.teacher_eta)
            self._teacher_pending.assign(0.0)

    def initialize_teacher(self, batches, learning_rate=None):
        """DKEL's decoupled teacher initialisation: copy the student's weights into the teacher, then train the
        teacher alone with cross-entropy on `batches` (a list of `(images, labels)`) with plain SGD.

        `fit` calls it once, on the first `teacher_init_steps` training batches, before training starts; the
        state variable `teacher_initialized` keeps it from running again after a resume.
        """
        for s, t in self._weight_pairs():
            t.assign(ops.copy(s))  # a copy: under JAX the teacher's buffers are donated when it trains below
        with backend.strategy_scope_of(self):  # the teacher's variables live under the distiller's strategy
            wrapper = self._teacher_classifier()
            wrapper.compile(
                optimizer=keras.optimizers.SGD(learning_rate or self.teacher_init_learning_rate),
                loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * self.num_peers,
            )
        for teacher in self.teachers:
            teacher.trainable = True
        try:
            for images, labels in batches:
                inputs = [images] * len(wrapper.inputs) if len(wrapper.inputs) > 1 else images
                wrapper.train_on_batch(inputs, [labels] * self.num_peers)
        finally:
            for teacher in self.teachers:
                teacher.trainable = False
        self._teacher_initialized.assign(1)

    def _teacher_classifier(self):
        """A functional view of the teacher(s): image(s) -> list of M logits (shares the teacher's layers)."""
        if self.multi_branch:
            teacher = self.teachers[0]
            return _Classifier(teacher.inputs, list(teacher.output["logits"]), name="teacher_classifier")
        inputs = keras.Input(shape=tuple(self.teachers[0].inputs[0].shape[1:]))
        return _Classifier(inputs, [t(inputs) for t in self.teachers], name="teacher_classifier")

    # ------------------------------------------------------------------ loss
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        _, index = _split_inputs(x)
        if training and index is None:
            needing = [part.name for part in self.knowledge if part.needs_index]
            if needing:
                raise ValueError(_missing_index_message(needing))
        labels = _labels(y, self.num_classes)
        peer_logits = y_pred["peer_logits"]
        context = {"index": index, "labels": labels, "training": bool(training), "sample_weight": sample_weight}
        for key in ("features", "shared_features"):
            if key in y_pred:
                context[key] = y_pred[key]
        if self.teachers:
            context["teacher_logits"] = y_pred["teacher_logits"]

        # Losses the students' layers added (kernel regularisers, add_loss), as Keras's own compute_loss does.
        total = sum((ops.cast(loss, "float32") for loss in self.losses), ops.zeros((), "float32"))
        decay = getattr(self, "coupled_weight_decay", 0.0)
        if decay:
            squares = [ops.sum(ops.square(ops.cast(v, "float32"))) for v in self.trainable_variables]
            total = total + 0.5 * decay * ops.sum(ops.stack(squares))
        ce = peer_cross_entropy(labels, peer_logits, sample_weight)
        total = total + self.ce_weight * ops.sum(ce)
        pending = []
        for part, trackers, loss_trackers in zip(self.knowledge, self._kd_trackers, self._part_loss_trackers):
            knowledge = part.targets(peer_logits, context)
            kd = pairwise_kd(
                knowledge["targets"], peer_logits, part.temperature, knowledge["pair_weights"], sample_weight
            )
            total = total + part.weight * ops.cast(part.schedule, "float32") * ops.sum(kd)
            for i, tracker in enumerate(trackers):
                tracker.update_state(kd[i])
            for loss_name, value in knowledge.get("losses", {}).items():
                total = total + value
                loss_trackers[loss_name].update_state(value)
            if "state" in knowledge:
                pending.append((part, knowledge["state"]))

        if training and (pending or self.teachers):
            finite = ops.isfinite(total)
            for part, state in pending:
                part.commit(state, finite)
            if self.teachers:  # the optimizer step about to run (skipped when not finite) is owed to the teacher
                self._teacher_pending.assign(ops.cast(finite, "float32"))

        spread = ops.mean(ops.std(peer_logits, axis=-1), axis=0)  # (M,): how far a peer is from uniform output
        for i in range(self.num_peers):
            self._ce_trackers[i].update_state(ce[i])
            self._spread_trackers[i].update_state(spread[i])
        logits_sets = [peer_logits] + ([context["teacher_logits"]] if self.teachers else [])
        for logits, trackers, ensemble in zip(logits_sets, self._accuracy_trackers, self._ensemble_trackers):
            correct = ops.cast(ops.equal(ops.argmax(logits, axis=-1), ops.expand_dims(labels, 1)), "float32")
            for i in range(self.num_peers):
                trackers[i].update_state(correct[:, i], sample_weight=sample_weight)
            hit = ops.equal(ops.argmax(ensemble_probabilities(logits), axis=-1), labels)
            ensemble.update_state(ops.cast(hit, "float32"), sample_weight=sample_weight)
        return backend.scale_loss_for_replicas(total)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # Metrics passed to compile() see the ensemble's probabilities; our own trackers were updated in compute_loss.
        logs = super().compute_metrics(x, y, y_pred["probabilities"], sample_weight=sample_weight)
        return backend.logs_for_replicas(logs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Called by Keras's TensorFlow trainer only, under a strategy: build from one replica's inputs (see
        # keras_okd.backend.first_replica_batch) rather than from a cross-replica average of the batch.
        if iterator is not None and data_batch is None:
            data_batch = backend.first_replica_batch(self.distribute_strategy, iterator)
        return super()._maybe_symbolic_build(data_batch=data_batch)

    # ------------------------------------------------------------------ compile / fit / evaluate / predict
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, coupled_weight_decay=0.0, **kwargs):
        """Like `keras.Model.compile`, without `loss`: the distiller computes its own.

        The optimizer is wrapped in `keras.optimizers.LossScaleOptimizer` (scale 1 under float32) so that a step with
        non-finite gradients changes no weights; under `mixed_float16` Keras's dynamic loss scaling is kept.

        Args:
            optimizer: a Keras optimizer or its name.
            metrics: extra metrics, computed on the ensemble's probabilities.
            coupled_weight_decay: PyTorch-style weight decay: `0.5 * wd * ||w||^2` over every trainable weight is added
                to the loss, so `wd * w` joins the gradient before momentum, as `torch.optim.SGD(weight_decay=wd)`
                does and as the papers' recipes assume. A Keras optimizer's own `weight_decay` is decoupled
                (`w -= lr * wd * w` outside momentum), about 10 times weaker under momentum 0.9 for the same value.
            **kwargs: passed to `keras.Model.compile`.
        """
        if loss is not None:
            raise ValueError(
                "OnlineDistiller computes its own loss (cross-entropy plus the knowledge parts' KD terms); "
                "compile it without `loss`."
            )
        if not float(coupled_weight_decay) >= 0:
            raise ValueError(f"coupled_weight_decay must be >= 0, got {coupled_weight_decay}.")
        self.coupled_weight_decay = float(coupled_weight_decay)
        optimizer = keras.optimizers.get(optimizer)
        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            if keras.config.dtype_policy().name == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            else:
                optimizer = keras.optimizers.LossScaleOptimizer(
                    optimizer, initial_scale=1.0, dynamic_growth_steps=2**30
                )
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None:
            config["coupled_weight_decay"] = getattr(self, "coupled_weight_decay", 0.0)
        return config

    def compile_from_config(self, config):
        """Recompile a loaded distiller from its saved compile config (optimizer state is then restored by Keras)."""
        config = dict(keras.saving.deserialize_keras_object(config))
        config.pop("loss", None)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, callbacks=None, validation_data=None, **kwargs):
        """`keras.Model.fit` with input checks, the method's schedules and the non-finite-loss guard.

        Before any step runs: data without indices is refused when a part needs them; indices and labels are checked
        (whole arrays up front, tf.data datasets batch by batch in the pipeline). When `callbacks` holds no
        `KnowledgeSchedule`, the distiller's own schedules are added. A non-finite loss raises `FloatingPointError`
        after its step was skipped, unless `keras.callbacks.TerminateOnNaN` is among the callbacks.
        """
        needing = [part.name for part in self.knowledge if part.needs_index]
        self._check_state_size(kwargs.get("verbose", "auto"))
        callbacks = list(callbacks or [])
        if self.schedules and not any(isinstance(c, okd_callbacks.KnowledgeSchedule) for c in callbacks):
            callbacks.append(okd_callbacks.KnowledgeSchedule(self.schedules))
        raise_on_nonfinite = not any(isinstance(c, keras.callbacks.TerminateOnNaN) for c in callbacks)
        callbacks.append(_Guard(raise_on_nonfinite))
        with backend.process_inputs(x, validation_data) as (x, validation_data), _clear_input_errors():
            x = self._checked_data(x, y, needing)
            if validation_data is not None:
                validation_data = self._checked_validation(validation_data)
            if self.teachers and self.teacher_init_steps and not int(ops.convert_to_numpy(self._teacher_initialized)):
                self.initialize_teacher(_first_batches(x, y, batch_size, self.teacher_init_steps))
            return super().fit(
                x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks, validation_data=validation_data, **kwargs
            )

    def state_bytes(self):
        """Bytes held by the per-sample state of the knowledge parts (the temporal accumulator's bank and counts)."""
        return sum(
            int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
            for part in self.knowledge if part.needs_index for v in part.non_trainable_weights if len(v.shape)
        )

    def _check_state_size(self, verbose):
        """Before training: log the per-sample state's size once, and refuse state the device cannot hold."""
        nbytes = self.state_bytes()
        if not any(part.needs_index for part in self.knowledge):
            return
        message = f"keras_okd: per-sample knowledge state (bank and visit counts) holds {nbytes:,} bytes."
        _logger.info(message)
        if verbose != 0 and not getattr(self, "_state_size_logged", False):
            print(message)
            self._state_size_logged = True
        backend.check_state_fits(nbytes, f"The per-sample knowledge state of {self.name!r}")

    def evaluate(self, x=None, y=None, **kwargs):
        """`keras.Model.evaluate` with the same input checks as `fit`; never changes bank, counts or schedules."""
        if kwargs.get("_use_cached_eval_dataset"):  # validation inside fit: data already checked, _Guard present
            return super().evaluate(x, y, **kwargs)
        callbacks = list(kwargs.pop("callbacks", None) or []) + [_Guard(False)]
        with backend.process_inputs(evaluation=x) as (_, x), _clear_input_errors():
            x = self._checked_data(x, y, [])
            try:
                return super().evaluate(x, y, callbacks=callbacks, **kwargs)
            except Exception:
                backend.reattach_state(self)
                raise

    def predict(self, x, **kwargs):
        """The deployed ensemble's class probabilities `(N, classes)`: the mean of the students' (or, with
        `deploy="teacher"`, the teacher peers') softmax outputs."""
        self.sync_teacher()
        return super().predict(x, **kwargs)["probabilities"]

    def predict_on_batch(self, x):
        self.sync_teacher()
        return super().predict_on_batch(x)["probabilities"]

    def peer_model(self, index, teacher=None):
        """Peer `index` as a standalone `keras.Model` (image -> logits) of plain Keras layers, sharing the trained
        weights: student `index`, or for a multi-branch student trunk + branch `index`.

        Args:
            index: peer index.
            teacher: take it from the mean teacher; defaults to `deploy == "teacher"`.
        """
        from keras_okd.models import extract_branch

        use_teacher = self.deploy == "teacher" if teacher is None else bool(teacher)
        if use_teacher and not self.teachers:
            raise ValueError("This distiller has no teacher (teacher_eta=None).")
        self.sync_teacher()
        networks = self.teachers if use_teacher else self.students
        if not 0 <= index < self.num_peers:
            raise ValueError(f"peer index {index} outside [0, {self.num_peers}).")
        if self.multi_branch:
            return extract_branch(networks[0], index, name=f"{networks[0].name}_branch{index}")
        return networks[index]

    def ensemble_model(self, name="ensemble", teacher=None):
        """A standalone `keras.Model` (plain Keras layers only) mapping images to the peers' mean probabilities.

        It shares the trained weights; `.save()` writes a `.keras` file that loads without keras_okd.

        Args:
            name: model name.
            teacher: use the teacher's peers; defaults to `deploy == "teacher"`.
        """
        if self.multi_branch:  # the whole multi-branch network, once: its trunk is shared by the branches
            use_teacher = self.deploy == "teacher" if teacher is None else bool(teacher)
            self.sync_teacher()
            network = (self.teachers if use_teacher else self.students)[0]
            inputs = keras.Input(shape=tuple(network.inputs[0].shape[1:]), name=f"{name}_input")
            logits = network([inputs] * self.num_peers if self._per_branch_inputs else inputs)["logits"]
        else:
            peers = [self.peer_model(i, teacher) for i in range(self.num_peers)]
            inputs = keras.Input(shape=tuple(peers[0].inputs[0].shape[1:]), name=f"{name}_input")
            logits = [peer(inputs) for peer in peers]
        probs = [keras.layers.Softmax(dtype="float32", name=f"softmax_{i}")(z) for i, z in enumerate(logits)]
        return keras.Model(inputs, keras.layers.Average(name="mean")(probs), name=name)

    # ------------------------------------------------------------------ checks
    def _checked_data(self, x, y, needing):
        """Refuse missing indices now; check values of arrays now and of tf.data datasets in the pipeline."""
        tf_dataset = _tf_dataset_type()
        if tf_dataset is not None and isinstance(x, tf_dataset):
            spec = x.element_spec
            inputs_spec = spec[0] if isinstance(spec, tuple) else spec
            if needing and not (isinstance(inputs_spec, dict) and "index" in inputs_spec):
                raise ValueError(_missing_index_message(needing))
            return x.map(self._pipeline_check)
        array_like = hasattr(x, "shape") or (isinstance(x, dict) and "index" not in x)
        if needing and array_like:
            raise ValueError(_missing_index_message(needing))
        if isinstance(x, dict) and "index" in x:
            self._check_index_values(np.asarray(x["index"]))
        if y is not None and hasattr(y, "shape"):
            self._check_label_values(np.asarray(y))
        return x

    def _checked_validation(self, validation_data):
        tf_dataset = _tf_dataset_type()
        if tf_dataset is not None and isinstance(validation_data, tf_dataset):
            return validation_data.map(self._pipeline_check)
        if isinstance(validation_data, (tuple, list)) and len(validation_data) >= 2:
            vx, vy = validation_data[0], validation_data[1]
            if isinstance(vx, dict) and "index" in vx:
                self._check_index_values(np.asarray(vx["index"]))
            self._check_label_values(np.asarray(vy))
        return validation_data

    def _check_index_values(self, index):
        if self.num_train_samples is None or index.size == 0:
            return
        if not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"{_CHECK_MARKER}sample indices must be integers, got dtype {index.dtype}.")
        low, high = int(index.min()), int(index.max())
        if low < 0 or high >= self.num_train_samples:
            raise ValueError(_index_range_message(low, high, self.num_train_samples))

    def _check_label_values(self, labels):
        if labels.size == 0:
            return
        if labels.ndim > 1 and labels.shape[-1] != 1:
            raise ValueError(_label_shape_message(labels.shape))
        if not np.issubdtype(labels.dtype, np.integer):
            if not np.all(np.equal(np.mod(labels, 1), 0)):
                raise ValueError(f"{_CHECK_MARKER}labels must be integer class ids, got non-integer values.")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.num_classes:
            raise ValueError(_label_range_message(low, high, self.num_classes))

    def _pipeline_check(self, *element):
        """tf.data map function: assert index and label ranges of one batch (runs in TF on every backend)."""
        import tensorflow as tf

        x, y = element[0], element[1] if len(element) > 1 else None
        checks = []
        if isinstance(x, dict) and "index" in x and self.num_train_samples is not None:
            index = tf.cast(x["index"], tf.int64)
            checks.append(
                tf.debugging.Assert(
                    tf.reduce_all((index >= 0) & (index < self.num_train_samples)),
                    [_CHECK_MARKER + f"index outside [0, {self.num_train_samples}); min/max:", tf.reduce_min(index),
                     tf.reduce_max(index)],
                )
            )
        if y is not None:
            labels = tf.cast(y, tf.int64)
            checks.append(
                tf.debugging.Assert(
                    tf.reduce_all((labels >= 0) & (labels < self.num_classes)),
                    [_CHECK_MARKER + f"label outside [0, {self.num_classes}); min/max:", tf.reduce_min(labels),
                     tf.reduce_max(labels)],
                )
            )
        with tf.control_dependencies(checks):
            return tf.nest.map_structure(tf.identity, element if len(element) > 1 else element[0])

    # ------------------------------------------------------------------ serialisation
    def get_config(self):
        config = super().get_config()
        students = [keras.saving.serialize_keras_object(s) for s in self.students]
        config.update(
            {
                "students": students[0] if self.multi_branch else students,
                "knowledge": [keras.saving.serialize_keras_object(p) for p in self.knowledge],
                "schedules": okd_callbacks.serialize_schedules(self.schedules),
                "views": None if self.views is None else keras.saving.serialize_keras_object(self.views),
                "teacher_eta": self.teacher_eta,
                "teacher_init_steps": self.teacher_init_steps,
                "teacher_init_learning_rate": self.teacher_init_learning_rate,
                "deploy": self.deploy,
                "ce_weight": self.ce_weight,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        students = config["students"]
        if isinstance(students, list):
            config["students"] = [keras.saving.deserialize_keras_object(s) for s in students]
        else:
            config["students"] = keras.saving.deserialize_keras_object(students)
        config["knowledge"] = [keras.saving.deserialize_keras_object(p) for p in config["knowledge"]]
        if config.get("views") is not None:
            config["views"] = keras.saving.deserialize_keras_object(config["views"])
        return cls(**config)


class _Classifier(keras.Model):
    """A functional model whose step logs survive `MultiWorkerMirroredStrategy` (see `backend.logs_for_replicas`)."""

    def compute_metrics(self, *args, **kwargs):
        return backend.logs_for_replicas(super().compute_metrics(*args, **kwargs))


class _Guard(keras.callbacks.Callback):
    """Keeps the model's state safe when a step fails, and raises FloatingPointError after a batch whose loss was not
    finite (its update was skipped)."""

    def __init__(self, raise_on_nonfinite):
        super().__init__()
        self.raise_on_nonfinite = raise_on_nonfinite

    def on_train_begin(self, logs=None):
        backend.keep_state_for_errors(self.model)

    def on_test_begin(self, logs=None):
        self.model.sync_teacher()
        backend.keep_state_for_errors(self.model, optimizer=False)

    def on_train_end(self, logs=None):
        self.model.sync_teacher()

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        if not self.raise_on_nonfinite:
            return
        loss = logs.get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        bad = sorted(k for k, v in logs.items() if _is_number(v) and not math.isfinite(float(v)))
        raise FloatingPointError(
            f"Non-finite loss at batch {batch}: non-finite logs {bad}. The step's weight and bank updates were "
            "skipped, so the model is as it was before this batch. Lower the learning rate, clip gradients "
            "(optimizer clipnorm=...), or check the inputs; pass keras.callbacks.TerminateOnNaN() to stop "
            "training quietly instead of raising."
        )


def _is_number(value):
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


class _clear_input_errors:
    """Turns the pipeline's TF assertion errors into a ValueError that says what is wrong and how to fix it."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or _CHECK_MARKER not in str(exc) or isinstance(exc, ValueError):
            return False
        message = str(exc)
        detail = message[message.index(_CHECK_MARKER) + len(_CHECK_MARKER):].split("\n")[0]
        raise ValueError(
            f"Bad batch refused before it reached the training step: {detail.strip()}. Indices must be positions "
            "in the training set (keras_okd.data.with_index, applied before shuffling and batching, with the "
            "distiller's num_train_samples equal to the training set's size); labels must be integer class ids "
            "in [0, num_classes)."
        ) from None


def _is_multi_branch(model):
    try:
        output = model.output
    except (AttributeError, ValueError):
        return False
    return isinstance(output, dict) and isinstance(output.get("logits"), (list, tuple))


def _logits_classes(tensor, model, i):
    shape = tuple(tensor.shape)
    if len(shape) != 2 or not isinstance(shape[-1], int):
        raise ValueError(f"Branch {i} of {model.name} must output logits (batch, classes); got {shape}.")
    return shape[-1]


def _clone_as_teacher(network):
    """An independent copy of `network` (same architecture and weights, new variables), frozen: the mean teacher."""
    teacher = keras.models.clone_model(network)
    teacher.set_weights(network.get_weights())
    teacher.name = f"teacher_{network.name}"
    teacher.trainable = False
    return teacher


def _first_batches(x, y, batch_size, steps):
    """The first `steps` training batches as `(images, labels)` numpy pairs (for the teacher's initialisation)."""
    tf_dataset = _tf_dataset_type()
    if tf_dataset is not None and isinstance(x, tf_dataset):
        batches = []
        for element in x.take(steps):
            inputs, labels = element[0], element[1]
            images = inputs["inputs"] if isinstance(inputs, dict) else inputs
            batches.append((np.asarray(images), np.asarray(labels)))
        return batches
    images = x["inputs"] if isinstance(x, dict) else x
    size = batch_size or 32
    return [
        (np.asarray(images[k * size:(k + 1) * size]), np.asarray(y[k * size:(k + 1) * size]))
        for k in range(steps)
        if k * size < len(y)
    ]


def _make_names_unique(students):
    """Rename students whose model name repeats to `{name}_{i}`: nested in one Keras model (the ensemble, a saved
    distiller), names must be unique. Two students built by the same zoo function are the usual case."""
    seen = set()
    for i, student in enumerate(students):
        if student.name in seen:
            student.name = f"{student.name}_{i}"
        seen.add(student.name)


def _split_inputs(inputs):
    if isinstance(inputs, dict):
        if "inputs" not in inputs:
            raise ValueError(
                f"A dict input must hold the images under 'inputs' (and optionally 'index'); got keys {sorted(inputs)}."
            )
        return inputs["inputs"], inputs.get("index")
    return inputs, None


def _labels(y, num_classes):
    if y is None:
        raise ValueError("OnlineDistiller needs labels y (integer class ids) to train and evaluate.")
    shape = tuple(y.shape)
    if len(shape) > 1 and not (len(shape) == 2 and shape[1] == 1):
        raise ValueError(_label_shape_message(shape))
    return ops.reshape(ops.cast(y, "int32"), (-1,))


def _num_classes(student, i):
    try:
        shape = student.output_shape
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"students[{i}] ({student.name}) has no known output shape; build it first "
            "(use a functional model, or call it once on a batch)."
        ) from error
    if not (isinstance(shape, tuple) and len(shape) == 2 and isinstance(shape[-1], int)):
        raise ValueError(
            f"students[{i}] ({student.name}) must output one tensor of logits (batch, classes); got {shape}."
        )
    return shape[-1]


def _tf_dataset_type():
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - tensorflow is a dependency
        return None
    return tf.data.Dataset


def _missing_index_message(parts):
    return (
        f"Knowledge part(s) {parts} keep per-sample state and need each training sample's index, but the data has "
        "none. Wrap the training set with keras_okd.data.with_index(ds) before shuffling and batching, or pass "
        "x={'inputs': images, 'index': numpy.arange(len(images))}."
    )


def _index_range_message(low, high, n):
    return (
        f"{_CHECK_MARKER}sample indices span [{low}, {high}] but must lie in [0, {n}) (num_train_samples={n}). "
        "Build the method with num_train_samples equal to the training set's size, and attach indices with "
        "keras_okd.data.with_index before shuffling and batching."
    )


def _label_range_message(low, high, c):
    return (
        f"{_CHECK_MARKER}labels span [{low}, {high}] but must be class ids in [0, {c}); the students output {c} "
        "logits. Give the students num_classes covering every label."
    )


def _label_shape_message(shape):
    return (
        f"labels must be integer class ids of shape (batch,) or (batch, 1), got shape {shape}. For one-hot labels "
        "pass their argmax."
    )
