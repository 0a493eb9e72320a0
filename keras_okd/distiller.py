"""`OnlineDistiller`: one `keras.Model` that trains a group of peers together with online knowledge distillation.

Design choice: the distiller overrides `compute_loss` (and `compute_metrics`), not `train_step`. Keras's own
`train_step` of each backend (tf.GradientTape, jax.value_and_grad over a stateless call, torch autograd) runs the
forward pass through `call`, which returns every peer's logits, then calls `compute_loss`, then applies the optimizer.
So the whole step is written once in `keras.ops` and every backend runs it with its default compilation
(tf.function, jax.jit, torch eager). State that changes during a step (the temporal accumulator's bank and counts) is
written inside `compute_loss` through non-trainable variables, which Keras carries out of the JAX stateless call like
batch-norm statistics; writes happen only when `training=True`, so `evaluate` and `predict` never change it.

Bad input is refused before any state changes: structural problems (fewer than two students, class counts that
differ, a part that needs indices fed data without them, labels of the wrong shape) raise while the model is built or
the step is traced; value problems (an index outside `[0, num_samples)`, a label outside `[0, classes)`) are checked
in the input pipeline, before the batch reaches the step. A non-finite loss skips the optimizer update (Keras's
`LossScaleOptimizer` at a fixed scale of 1, the same mechanism `mixed_float16` uses) and the bank writes, then `fit`
raises `FloatingPointError` naming the terms that went non-finite; with `keras.callbacks.TerminateOnNaN` among the
callbacks, training stops quietly instead.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_okd import backend
from keras_okd import callbacks as okd_callbacks
from keras_okd.knowledge.base import KnowledgePart
from keras_okd.losses import ensemble_probabilities, pairwise_kd, peer_cross_entropy

_CHECK_MARKER = "keras_okd input check: "


@keras.saving.register_keras_serializable(package="keras_okd")
class OnlineDistiller(keras.Model):
    """Trains M >= 2 peers together: each learns from the labels (cross-entropy) and from soft targets that a list of
    knowledge parts builds from the peers' outputs.

    Loss of a step: `sum_i CE_i + sum_parts weight * schedule * sum_i KD_part(i) + parts' own losses`, where
    `KD_part(i) = sum_j W[i, j] * tau^2 * KL(target_j || softmax(z_i / tau))` (see `keras_okd.knowledge`).

    Data: `x` is the images, or a dict `{"inputs": images, "index": sample indices}` as made by
    `keras_okd.data.with_index`; `y` is integer class ids. Parts that keep per-sample state (the temporal
    accumulator) need the index.

    Logs (fit and evaluate): `loss` (total); per student `student_{i}_ce`, `student_{i}_{part}` (the part's KD term
    before weight and schedule) and `student_{i}_accuracy`; `ensemble_accuracy` (mean of the students'
    probabilities); each part's own losses as `{part}_{name}`.

    Args:
        students: list of 2 or more `keras.Model`s mapping the same inputs to logits over the same classes; their
            architectures may differ. A student whose name repeats an earlier one's is renamed `{name}_{i}`.
        knowledge: list of `keras_okd.knowledge.KnowledgePart`s with distinct names; empty trains the students
            independently (CE only) in one model.
        schedules: dict `{part name: [keras_okd.callbacks.Schedule, ...]}` applied at each epoch start by
            `keras_okd.callbacks.KnowledgeSchedule` (added by `fit` when you pass none).
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

    def __init__(self, students, knowledge=(), schedules=None, name="online_distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        students = list(students) if isinstance(students, (list, tuple)) else [students]
        if len(students) < 2:
            raise ValueError(
                f"OnlineDistiller needs at least 2 students, got {len(students)}. Online distillation trains a group "
                "of networks together; to train one network alone, call its own fit()."
            )
        for i, student in enumerate(students):
            if not isinstance(student, keras.Model):
                raise TypeError(f"students[{i}] must be a keras.Model, got {type(student).__name__}.")
        classes = [_num_classes(s, i) for i, s in enumerate(students)]
        if len(set(classes)) != 1:
            raise ValueError(
                f"All students must output logits over the same classes; got class counts {classes} "
                f"(students {[s.name for s in students]}). Give every student the same num_classes."
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

        _make_names_unique(students)
        self.students = students
        self.knowledge = knowledge
        self.schedules = schedules
        self.num_peers = len(students)
        self.num_classes = classes[0]
        self.peer_names = [f"student_{i}" for i in range(self.num_peers)]
        for part in knowledge:
            part.build_for_peers(self.num_peers, self.num_classes)
        samples = [part.num_samples for part in knowledge if part.needs_index]
        self.num_train_samples = min(samples) if samples else None

        self._ce_trackers = [keras.metrics.Mean(name=f"{p}_ce") for p in self.peer_names]
        self._accuracy_trackers = [keras.metrics.Mean(name=f"{p}_accuracy") for p in self.peer_names]
        self._kd_trackers = [
            [keras.metrics.Mean(name=f"{p}_{part.name}") for p in self.peer_names] for part in knowledge
        ]
        self._part_loss_trackers = [
            {n: keras.metrics.Mean(name=f"{part.name}_{n}") for n in part.loss_names} for part in knowledge
        ]
        self._ensemble_accuracy = keras.metrics.Mean(name="ensemble_accuracy")
        if all(s.built for s in students):
            self.built = True

    def _track_variables(self):
        # Called by Keras's torch backend only: register every peer's variables with torch, even when peers of the
        # same architecture share variable paths (see keras_okd.backend.torch_parameters_by_position).
        self._torch_params = backend.torch_parameters_by_position(self.variables)

    # ------------------------------------------------------------------ forward
    def call(self, inputs, training=None):
        """Run every student. Returns `{"probabilities": (B, C) ensemble, "peer_logits": (B, M, C)}`."""
        images, _ = _split_inputs(inputs)
        logits = [ops.cast(self.students[i](images, training=training), "float32") for i in range(self.num_peers)]
        peer_logits = ops.stack(logits, axis=1)
        return {"probabilities": ensemble_probabilities(peer_logits), "peer_logits": peer_logits}

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
        # Losses the students' layers added (kernel regularisers, add_loss), as Keras's own compute_loss does.
        total = sum((ops.cast(loss, "float32") for loss in self.losses), ops.zeros((), "float32"))

        ce = peer_cross_entropy(labels, peer_logits, sample_weight)
        total = total + ops.sum(ce)
        context = {"index": index, "labels": labels, "training": bool(training), "sample_weight": sample_weight}
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

        if training and pending:
            finite = ops.isfinite(total)
            for part, state in pending:
                part.commit(state, finite)

        correct = ops.cast(ops.equal(ops.argmax(peer_logits, axis=-1), ops.expand_dims(labels, 1)), "float32")
        for i in range(self.num_peers):
            self._ce_trackers[i].update_state(ce[i])
            self._accuracy_trackers[i].update_state(correct[:, i], sample_weight=sample_weight)
        ensemble_correct = ops.cast(ops.equal(ops.argmax(y_pred["probabilities"], axis=-1), labels), "float32")
        self._ensemble_accuracy.update_state(ensemble_correct, sample_weight=sample_weight)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # Metrics passed to compile() see the ensemble's probabilities; our own trackers were updated in compute_loss.
        return super().compute_metrics(x, y, y_pred["probabilities"], sample_weight=sample_weight)

    # ------------------------------------------------------------------ compile / fit / evaluate / predict
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Like `keras.Model.compile`, without `loss`: the distiller computes its own.

        The optimizer is wrapped in `keras.optimizers.LossScaleOptimizer` (scale 1 under float32) so that a step with
        non-finite gradients changes no weights; under `mixed_float16` Keras's dynamic loss scaling is kept.

        Args:
            optimizer: a Keras optimizer or its name.
            metrics: extra metrics, computed on the ensemble's probabilities.
            **kwargs: passed to `keras.Model.compile`.
        """
        if loss is not None:
            raise ValueError(
                "OnlineDistiller computes its own loss (cross-entropy plus the knowledge parts' KD terms); "
                "compile it without `loss`."
            )
        optimizer = keras.optimizers.get(optimizer)
        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            if keras.config.dtype_policy().name == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            else:
                optimizer = keras.optimizers.LossScaleOptimizer(
                    optimizer, initial_scale=1.0, dynamic_growth_steps=2**30
                )
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

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
        x = self._checked_data(x, y, needing)
        if validation_data is not None:
            validation_data = self._checked_validation(validation_data)
        callbacks = list(callbacks or [])
        if self.schedules and not any(isinstance(c, okd_callbacks.KnowledgeSchedule) for c in callbacks):
            callbacks.append(okd_callbacks.KnowledgeSchedule(self.schedules))
        raise_on_nonfinite = not any(isinstance(c, keras.callbacks.TerminateOnNaN) for c in callbacks)
        callbacks.append(_Guard(raise_on_nonfinite))
        with _clear_input_errors():
            return super().fit(
                x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks, validation_data=validation_data, **kwargs
            )

    def evaluate(self, x=None, y=None, **kwargs):
        """`keras.Model.evaluate` with the same input checks as `fit`; never changes bank, counts or schedules."""
        if kwargs.get("_use_cached_eval_dataset"):  # validation inside fit: data already checked, _Guard present
            return super().evaluate(x, y, **kwargs)
        x = self._checked_data(x, y, [])
        callbacks = list(kwargs.pop("callbacks", None) or []) + [_Guard(False)]
        with _clear_input_errors():
            try:
                return super().evaluate(x, y, callbacks=callbacks, **kwargs)
            except Exception:
                backend.reattach_state(self)
                raise

    def predict(self, x, **kwargs):
        """The ensemble's class probabilities `(N, classes)`: the mean of the students' softmax outputs."""
        return super().predict(x, **kwargs)["probabilities"]

    def predict_on_batch(self, x):
        return super().predict_on_batch(x)["probabilities"]

    def ensemble_model(self, name="ensemble"):
        """A standalone `keras.Model` (plain Keras layers only) mapping images to the students' mean probabilities.

        It shares the students' weights; `.save()` writes a `.keras` file that loads without keras_okd.
        """
        inputs = keras.Input(shape=tuple(self.students[0].inputs[0].shape[1:]), name="image")
        probs = [
            keras.layers.Softmax(dtype="float32", name=f"softmax_{i}")(self.students[i](inputs))
            for i in range(self.num_peers)
        ]
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
        config.update(
            {
                "students": [keras.saving.serialize_keras_object(s) for s in self.students],
                "knowledge": [keras.saving.serialize_keras_object(p) for p in self.knowledge],
                "schedules": okd_callbacks.serialize_schedules(self.schedules),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["students"] = [keras.saving.deserialize_keras_object(s) for s in config["students"]]
        config["knowledge"] = [keras.saving.deserialize_keras_object(p) for p in config["knowledge"]]
        return cls(**config)


class _Guard(keras.callbacks.Callback):
    """Keeps the model's state safe when a step fails, and raises FloatingPointError after a batch whose loss was not
    finite (its update was skipped)."""

    def __init__(self, raise_on_nonfinite):
        super().__init__()
        self.raise_on_nonfinite = raise_on_nonfinite

    def on_train_begin(self, logs=None):
        backend.keep_state_for_errors(self.model)

    def on_test_begin(self, logs=None):
        backend.keep_state_for_errors(self.model, optimizer=False)

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
