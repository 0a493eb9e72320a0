"""`OnlineDistiller`: one `keras.Model` that trains a group of peers together with online knowledge distillation.

Design choice: the distiller overrides `compute_loss` (and `compute_metrics`), and `train_step` only to run
`begin_training_step` (the teacher's owed EMA update, a copy of the batch-norm statistics) before Keras's own. Keras's
`train_step` of each backend (tf.GradientTape, jax.value_and_grad over a stateless call, torch autograd) runs the
forward pass through `call`, which returns every peer's logits and changes nothing else, then calls `compute_loss`,
then applies the optimizer. So the whole step is written once in `keras.ops` and every backend runs it with its
default compilation (tf.function, jax.jit, torch eager). State that changes during a step (the temporal accumulator's
bank) is written inside `compute_loss` through non-trainable variables, which Keras carries out of the JAX stateless
call like batch-norm statistics; writes happen only when `training=True`, so `evaluate` and `predict` never change it.

The parts around the loss are this file's siblings (see `keras_okd.distiller`): `peers`, `inputs`, `teacher`,
`safety`, `logs` and `callbacks`.
"""

from functools import partial

import keras
from keras import ops

from keras_okd import backend
from keras_okd.distiller import callbacks as okd_callbacks
from keras_okd.distiller import safety
from keras_okd.distiller.inputs import (DataCheck, batch_again, clear_input_errors, first_batches, is_dataset,
                                        labels_of, missing_index_message, split_inputs)
from keras_okd.distiller.logs import PeerLogs
from keras_okd.distiller.peers import Peers
from keras_okd.distiller.teacher import MeanTeacher, check_teacher_arguments
from keras_okd.knowledge.base import PartOutput, check_parts
from keras_okd.losses import coupled_weight_decay, ensemble_probabilities, peer_cross_entropy


@keras.saving.register_keras_serializable(package="keras_okd")
class OnlineDistiller(keras.Model):
    """Trains M >= 2 peers together: each learns from the labels (cross-entropy) and from what a list of knowledge
    parts builds from the peers' outputs.

    Peers are M independent students (a list of `keras.Model`s, architectures may differ) or the M branches of one
    multi-branch student (`keras_okd.models.multi_branch`). Loss of a step:
    `ce_weight * sum_i CE_i + sum_parts weight * schedule * sum_i L_part(i) + parts' own losses`, where `L_part(i)` is
    `sum_j W[i, j] * tau^2 * KL(target_j || softmax(z_i / tau))` for a part that gives soft targets, or the part's own
    term (a feature-distillation loss) for a part that gives `peer_losses` (see `keras_okd.knowledge`).

    Data (`keras_okd.distiller.inputs`): `x` is what the students take (an array, a list, a dict of named inputs),
    optionally with sample indices, `{"inputs": x, "index": i}` as `keras_okd.data.with_index` makes; `y` is integer
    class ids. Parts that keep per-sample state (the temporal accumulator) need the index; numpy arrays given to `fit`
    use their positions.

    Outputs, in one place: `distiller(x)` returns a dict (`call`: `"peer_logits"` `(B, M, C)`, `"probabilities"`
    `(B, C)`, ...); `predict(x)` returns the deployed networks' probabilities `(N, C)` alone. The exports are plain
    Keras models: `students[i]` and `peer_model(i)` output **logits**; `ensemble_model()` and `deployed_model()`
    output **probabilities** (their output layer is named `probabilities`), so the run directories' `student_*.keras`
    give logits and `ensemble.keras` probabilities.

    Logs (fit and evaluate, `keras_okd.distiller.logs`): `loss` (the sum over the peers, not a mean); per peer
    `student_{i}_ce` (`branch_{i}_...` for branches), `_accuracy`, `_logit_std` and one term per knowledge part;
    `ensemble_accuracy`; the teacher's accuracies.

    Args:
        students: a list of 2 or more `keras.Model`s mapping the same inputs to logits over the same classes (a
            student whose name repeats an earlier one's is renamed `{name}_{i}`), or one multi-branch model.
        knowledge: list of `keras_okd.knowledge.KnowledgePart`s with distinct names, each with its own schedule
            (`KnowledgePart(schedule=...)`, advanced at each epoch start by the `KnowledgeSchedule` that `fit` adds);
            empty trains the peers independently (CE only) in one model.
        schedules: the older form of the parts' schedules, `{part name: [Schedule, ...]}`, still read from
            distillers saved before the parts owned them: each list is handed to the part it names.
        views: per-peer augmentation (any Keras layer, e.g. `keras_okd.data.peer_views`), applied independently for
            each peer inside the training step; None feeds every peer the same batch.
        teacher_eta: keep a mean teacher, `t = eta * s + (1 - eta) * t` after every step, eta in (0, 1]; None for none.
        teacher_init_steps: DKEL's decoupled initialisation: CE steps of the teacher alone before training (0: none).
        teacher_init_learning_rate: learning rate of those steps.
        teacher_warmup: EMA warm-up, `max(1 / (k + 2), eta)` for the k-th update (`keras_okd.distiller.teacher`).
        deploy: `"students"` or `"teacher"`: which networks `predict`, `peer_model` and `ensemble_model` use.
        deploy_peer: None to deploy the mean of every peer's probabilities, or a peer index to deploy that peer alone
            (OKDDip's group leader): what `predict` returns and `deployed_model` exports.
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
        teacher_warmup=False,
        deploy="students",
        deploy_peer=None,
        ce_weight=1.0,
        name="online_distiller",
        **kwargs,
    ):
        # The distiller itself always computes in float32: under a mixed policy Keras would otherwise read float32
        # variables in the compute dtype inside `call`. The students keep their own (mixed) policies and autocast
        # inside their own calls.
        kwargs["dtype"] = "float32"
        super().__init__(name=name, **kwargs)
        peers = Peers(students, views)
        knowledge = check_parts(knowledge, schedules, has_teacher=teacher_eta is not None)
        check_teacher_arguments(teacher_eta, teacher_init_steps, teacher_init_learning_rate, deploy)
        peers.check_deploy_peer(deploy_peer)
        if not float(ce_weight) >= 0:
            raise ValueError(f"ce_weight must be >= 0, got {ce_weight}.")

        self.peers = peers
        self.students = peers.networks
        self.knowledge = knowledge
        self.views = views
        self.teacher_eta = None if teacher_eta is None else float(teacher_eta)
        self.teacher_init_steps = int(teacher_init_steps)
        self.teacher_init_learning_rate = float(teacher_init_learning_rate)
        self.teacher_warmup = bool(teacher_warmup)
        self.deploy = deploy
        self.deploy_peer = deploy_peer
        self.ce_weight = float(ce_weight)
        self.multi_branch = peers.multi_branch
        self.num_peers = peers.num_peers
        self.num_classes = peers.num_classes
        self.peer_names = peers.names
        self.teacher = (MeanTeacher(self.students, teacher_eta, teacher_warmup, name="mean_teacher")
                        if teacher_eta is not None else None)

        for part in knowledge:
            part.check_layers(self.num_peers)
        peers.tap([sorted({n for part in knowledge for n in part.layers_for_peer(i)}) for i in range(self.num_peers)])
        shapes = peers.feature_shapes()
        for part in knowledge:
            part.build_for_peers(self.num_peers, self.num_classes, shapes)
        # the training set's size, as the parts that keep per-sample state know it (the presets' num_train_samples)
        samples = [part.num_samples for part in knowledge if part.needs_index]
        self.num_samples = min(samples) if samples else None
        self._data = DataCheck(self.num_samples, self.num_classes,
                               [part.name for part in knowledge if part.needs_index])
        self.logs = PeerLogs(self.peer_names, knowledge, self.teacher is not None, name="logs")
        if all(n.built for n in self.students):
            self.built = True

    @property
    def schedules(self):
        """`{part name: [Schedule, ...]}` of the parts that have schedules (read from the parts, which own them)."""
        return {part.name: list(part.schedules) for part in self.knowledge if part.schedules}

    @property
    def teachers(self):
        """The mean teacher's networks (one per student, or the one multi-branch copy); empty without a teacher."""
        return self.teacher.networks if self.teacher is not None else []

    def _track_variables(self):
        # Called by Keras's torch backend only: register every peer's variables with torch, even when peers of the
        # same architecture share variable paths (see keras_okd.backend.torch_parameters_by_position).
        self._torch_params = backend.torch_parameters_by_position(self.variables)

    # ------------------------------------------------------------------ forward
    def call(self, inputs, training=None):
        """Run every peer on its view, and the teacher. Changes nothing but what the networks' layers change in
        training (batch-norm statistics); the step's own work before the forward pass is `begin_training_step`.

        Returns a dict: `"probabilities"` `(B, C)` of the deployed networks; `"peer_logits"` `(B, M, C)`;
        `"peer_features"` (tapped layers per peer, when parts read any); `"inputs"` (each peer's view, when a part
        reads them); `"teacher_logits"` (no gradient) with a teacher; `"features"` and `"shared_features"` with a
        multi-branch student. `predict` returns the probabilities alone."""
        images, _ = split_inputs(inputs)
        views = self.peers.views_of(images, training)
        peer_logits, extra = self.peers.forward(self.students, views, training)
        out = dict(extra, peer_logits=peer_logits, probabilities=self._deployed(peer_logits))
        if any(part.needs_inputs for part in self.knowledge):
            out["inputs"] = views
        if self.teacher:
            out["teacher_logits"] = ops.stop_gradient(self.peers.forward(self.teachers, views, False)[0])
            if self.deploy == "teacher" and not training:
                out["probabilities"] = self._deployed(out["teacher_logits"])
        return out

    def train_step(self, *args):
        """Keras's training step of the running backend, with `begin_training_step` first, inside the same compiled
        step (`keras_okd.backend.train_step_after`)."""
        return backend.train_step_after(self, self.begin_training_step, super().train_step, *args)

    def begin_training_step(self):
        """What a training step does before the peers' forward pass: the teacher's owed EMA update, then a copy of
        the students' moving statistics, returned, which `compute_loss` writes back when the step's loss is not finite.

        `train_step` runs it, and `compute_loss` reads the copy through `keras_okd.backend.step_value` (per replica
        under a `tf.distribute` strategy; from the step's state under JAX). A training loop of your own, one that
        calls `distiller(x, training=True)` and `compute_loss`, should call it before each forward pass: otherwise the
        teacher's EMA is applied once, late, for all the steps since the last `sync_teacher`. Outside `train_step`
        `compute_loss` does not restore the statistics after a non-finite loss.
        """
        if self.teacher:
            self.teacher.catch_up(self.students)
        return safety.snapshot(safety.moving_state(self.students))

    def _deployed(self, logits):
        if self.deploy_peer is None:
            return ensemble_probabilities(logits)
        return ops.softmax(logits[:, self.deploy_peer], axis=-1)

    # ------------------------------------------------------------------ loss
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        _, index = split_inputs(x)
        if training and index is None and self._data.needing_index:
            raise ValueError(missing_index_message(self._data.needing_index))
        labels = labels_of(y)
        peer_logits = y_pred["peer_logits"]
        context = {"index": index, "labels": labels, "training": bool(training), "sample_weight": sample_weight}
        context.update({k: y_pred[k] for k in ("peer_features", "inputs", "features", "shared_features",
                                              "teacher_logits") if k in y_pred})

        # Losses the students' layers added (kernel regularisers, add_loss), as Keras's own compute_loss does.
        total = sum((ops.cast(loss, "float32") for loss in self.losses), ops.zeros((), "float32"))
        total = total + coupled_weight_decay(self.trainable_variables, getattr(self, "coupled_weight_decay", 0.0))
        ce = peer_cross_entropy(labels, peer_logits, sample_weight)
        ce_scale = ops.ones_like(ce)  # a part may pause a peer's CE (SwitOKD's expert mode): "ce_scale"
        pending = []
        for k, part in enumerate(self.knowledge):
            out = PartOutput.of(part.targets(peer_logits, context))
            terms = part.peer_terms(out, peer_logits, sample_weight)
            total = total + part.weight * ops.cast(part.schedule, "float32") * ops.sum(terms)
            total = total + sum(out.losses.values(), ops.zeros((), "float32"))
            self.logs.update_part(k, terms, out.losses)
            if out.ce_scale is not None:
                ce_scale = ce_scale * ops.stop_gradient(ops.cast(out.ce_scale, "float32"))
            if out.state is not None:
                pending.append((part, out.state))
        total = total + self.ce_weight * ops.sum(ce * ce_scale)

        if training:
            before = backend.step_value(self)  # begin_training_step's copy, inside train_step
            if before is not None:  # a forward pass that made batch-norm statistics non-finite: refused too
                total = safety.unless_state_finite(total, safety.moving_state(self.students))
            finite = ops.isfinite(total)
            for part, state in pending:
                part.commit(state, finite)
            if self.teacher:  # the optimizer step about to run (skipped when not finite) is owed to the teacher
                self.teacher.owe(finite)
            if before is not None:
                safety.restore_unless(finite, safety.moving_state(self.students), before)
        self.logs.update_peers(ce, peer_logits, labels, context.get("teacher_logits"), sample_weight)
        return backend.scale_loss_for_replicas(total)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # Metrics passed to compile() see the ensemble's probabilities; our own trackers were updated in compute_loss.
        logs = super().compute_metrics(x, y, y_pred["probabilities"], sample_weight=sample_weight)
        return backend.logs_for_replicas(logs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Called by Keras's TensorFlow trainer only, under a strategy: build from one replica's inputs (see
        # keras_okd.backend.first_replica_batch) rather than from a cross-replica average of the batch.
        # Without a strategy Keras builds later, from the traced step, and reads no batch here: neither do we (a batch
        # read here would leave a cached pipeline partly read, which TensorFlow warns about at every fit).
        if iterator is not None and data_batch is None and getattr(self, "_distribute_strategy", None) is not None:
            data_batch = backend.first_replica_batch(self.distribute_strategy, iterator)
        return super()._maybe_symbolic_build(data_batch=data_batch)

    # ------------------------------------------------------------------ mean teacher
    def sync_teacher(self):
        """Apply the teacher's owed EMA update now (see `keras_okd.distiller.teacher`); a no-op without one.

        `fit` calls it before validation and at the end of training, `evaluate` and `predict` before they run, so
        the teacher one reads is always the EMA of every optimizer step taken.
        """
        if self.teacher:
            self.teacher.sync(self.students)

    def initialize_teacher(self, batches, learning_rate=None):
        """DKEL's decoupled teacher initialisation on `batches` (a list of `(inputs, labels)`): see
        `keras_okd.distiller.teacher.MeanTeacher.initialize`. `fit` calls it once, on the first `teacher_init_steps`
        training batches; the state variable `teacher.initialized` keeps it from running again after a resume."""
        with backend.strategy_scope_of(self):  # the teacher's variables live under the distiller's strategy
            self.teacher.initialize(self.students, batches, learning_rate or self.teacher_init_learning_rate,
                                    multi_branch=self.multi_branch)

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
        optimizer = safety.skipping_nonfinite(keras.optimizers.get(optimizer))
        self.coupled_weight_decay = float(coupled_weight_decay)
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

    def fit(self, x=None, y=None, batch_size=None, epochs=1, callbacks=None, validation_data=None,
            monitor_collapse=True, progress="short", **kwargs):
        """`keras.Model.fit` with input checks (`keras_okd.distiller.inputs`: numpy arrays whole, tf.data batch by
        batch; numpy arrays without indices get their positions), the knowledge parts' schedules, a `PeerCollapse`
        monitor and a short progress bar (`keras_okd.distiller.callbacks.for_fit`; `monitor_collapse=False`: no monitor;
        `progress="all"`: every logged value in the bar, as Keras shows them; `History` and the other callbacks get
        every value either way).
        A non-finite loss raises `FloatingPointError` after its step changed nothing, unless
        `keras.callbacks.TerminateOnNaN` is given."""
        if any(part.needs_index for part in self.knowledge):
            safety.check_state_size(self, kwargs.get("verbose", "auto"))
        callbacks = okd_callbacks.for_fit(self, callbacks, monitor_collapse, progress)
        raise_on_nonfinite = not any(isinstance(c, keras.callbacks.TerminateOnNaN) for c in callbacks)
        callbacks.append(safety.Guard(raise_on_nonfinite))
        if is_dataset(x):
            kwargs.setdefault("shuffle", False)  # a dataset shuffles itself; Keras would warn that it ignores True
        with backend.process_inputs(x, validation_data) as (x, validation_data), clear_input_errors():
            x = self._data.training(x, y)
            validation_data = self._data.validation(validation_data)
            outer = [part for part in self.knowledge if part.outer_every]
            if outer:
                callbacks.insert(0, okd_callbacks.OuterSteps(outer, partial(batch_again, x, y, batch_size)))
            if self.teacher and self.teacher_init_steps and not self.teacher.is_initialized:
                self.initialize_teacher(first_batches(x, y, batch_size, self.teacher_init_steps))
            with backend.usable_after_errors(self):
                return super().fit(x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks,
                                   validation_data=validation_data, **kwargs)

    def load_weights(self, filepath, *args, **kwargs):
        """`keras.Model.load_weights`, restoring the optimizer's state too when the distiller is compiled but has not
        trained yet: its optimizer is built first (Keras builds it on the first step), so that the saved momentum
        and counters have variables to go into instead of being skipped with a warning."""
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.trainable_variables)
        return super().load_weights(filepath, *args, **kwargs)

    def state_bytes(self):
        """Bytes held by the per-sample state of the knowledge parts (the temporal accumulator's bank and counts)."""
        return sum(part.state_bytes() for part in self.knowledge)

    def evaluate(self, x=None, y=None, **kwargs):
        """`keras.Model.evaluate` with the same input checks as `fit`; never changes bank, counts or schedules."""
        if kwargs.get("_use_cached_eval_dataset"):  # validation inside fit: data already checked, Guard present
            return super().evaluate(x, y, **kwargs)
        callbacks = list(kwargs.pop("callbacks", None) or []) + [safety.Guard(False)]
        with backend.process_inputs(evaluation=x) as (_, x), clear_input_errors():
            x = self._data.evaluation(x, y)
            with backend.usable_after_errors(self, optimizer=False):
                return super().evaluate(x, y, callbacks=callbacks, **kwargs)

    def predict(self, x, **kwargs):
        """The deployed model's class probabilities `(N, classes)`: the mean of the students' (or, with
        `deploy="teacher"`, the teacher peers') softmax outputs, or with `deploy_peer=k` peer k's alone."""
        self.sync_teacher()
        self.peers.check_inputs(x)
        with backend.usable_after_errors(self, optimizer=False, record=True):
            return super().predict(x, **kwargs)["probabilities"]

    def predict_on_batch(self, x):
        self.sync_teacher()
        return super().predict_on_batch(x)["probabilities"]

    # ------------------------------------------------------------------ export: plain Keras models sharing the weights
    def _networks(self, teacher):
        use_teacher = self.deploy == "teacher" if teacher is None else bool(teacher)
        if use_teacher and not self.teacher:
            raise ValueError("This distiller has no teacher (teacher_eta=None).")
        self.sync_teacher()
        return self.teachers if use_teacher else self.students

    def peer_model(self, index, teacher=None):
        """Peer `index` as a plain `keras.Model` (inputs -> logits): student `index`, or trunk + branch `index`;
        `teacher=True` takes it from the mean teacher (default: `deploy == "teacher"`)."""
        return self.peers.peer_model(self._networks(teacher), index)

    def ensemble_model(self, name="ensemble", teacher=None):
        """A plain `keras.Model` (inputs -> the peers' mean probabilities) whose `.save()` loads without keras_okd;
        `teacher=True` uses the teacher's peers (default: `deploy == "teacher"`)."""
        return self.peers.ensemble_model(self._networks(teacher), name)

    def deployed_model(self, name="deployed"):
        """What `predict` computes, as a plain `keras.Model` (inputs -> probabilities): the deployed networks'
        ensemble, or with `deploy_peer=k` peer k followed by a softmax."""
        return self.peers.deployed_model(self._networks(None), self.deploy_peer, name)

    # ------------------------------------------------------------------ serialisation
    def get_config(self):
        config = super().get_config()
        students = [keras.saving.serialize_keras_object(s) for s in self.students]
        config.update(
            {
                "students": students[0] if self.multi_branch else students,
                "knowledge": [keras.saving.serialize_keras_object(p) for p in self.knowledge],
                "views": None if self.views is None else keras.saving.serialize_keras_object(self.views),
                "teacher_eta": self.teacher_eta,
                "teacher_init_steps": self.teacher_init_steps,
                "teacher_init_learning_rate": self.teacher_init_learning_rate,
                "teacher_warmup": self.teacher_warmup,
                "deploy": self.deploy,
                "deploy_peer": self.deploy_peer,
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
