"""Offline knowledge distillation from a pretrained, frozen teacher (Hinton, Vinyals and Dean, "Distilling the
knowledge in a neural network", 2015), as a knowledge part: it composes with the online parts, so peers can learn
from a teacher alone (`keras_okd.methods.kd`) or from a teacher and each other at once.

The teacher runs on each peer's own input batch (`context["inputs"]`: the view that peer saw), in inference mode,
and its softened prediction is that peer's target: `tau^2 KL(softmax(t(x_i) / tau) || softmax(z_i / tau))`.

Relation to Keras's own `keras.distillation.Distiller`: for ONE student, `Distiller(teacher, student,
LogitsDistillation(temperature=tau, loss=keras.losses.KLDivergence()), student_loss_weight=1 - alpha)`, compiled
with a from-logits sparse cross-entropy, minimises the same loss as
`keras_okd.methods.kd([student, ...], teacher, temperature=tau, alpha=alpha)` does for each student (tested); use
Keras's for one student. This part adds what Keras's does not do: several students or the branches of one network,
a different view per peer, online knowledge parts in the same loss, schedules, and keras-okd's logs and CLI. A
teacher that a Keras `Distiller` used can be passed as it is (its `.teacher` is taken).
"""

import os

import keras
from keras import ops

from keras_okd.knowledge.base import KnowledgePart, PartOutput
from keras_okd.losses import soften


def teacher_model(teacher):
    """The frozen `keras.Model` behind `teacher`: a model, a path to a saved `.keras` model, or a
    `keras.distillation.Distiller` (its teacher). Sets `trainable = False`.

    Raises:
        ValueError: None, or something else.
    """
    if isinstance(teacher, (str, os.PathLike)):
        path = os.fspath(teacher)
        if not os.path.exists(path):
            raise ValueError(f"FrozenTeacher: no saved teacher model at {path!r}; pass a keras.Model or the path of "
                             "a .keras file (keras.Model.save).")
        teacher = keras.saving.load_model(path)
    distillation = getattr(keras, "distillation", None)
    if distillation is not None and isinstance(teacher, distillation.Distiller):
        teacher = teacher.teacher
    if not isinstance(teacher, keras.Model):
        raise ValueError(
            f"FrozenTeacher needs a pretrained teacher: a keras.Model mapping inputs to logits, the path of a saved "
            f".keras model, or a keras.distillation.Distiller; got {type(teacher).__name__}."
        )
    teacher.trainable = False
    return teacher


@keras.saving.register_keras_serializable(package="keras_okd")
class FrozenTeacher(KnowledgePart):
    """Every peer learns from a pretrained, frozen teacher's prediction on the batch that peer saw:

        L^i = tau^2 KL(softmax(t(x_i) / tau) || softmax(z_i / tau)),   t the teacher's logits, x_i peer i's input

    The teacher is called in inference mode (batch-norm statistics untouched) and its output is detached; it is
    never trained. It is part of the distiller's state: its weights are saved with the distiller (`save`,
    `save_weights`, `BackupAndRestore`), so a saved distiller is complete, but never with the students, whose exported
    models do not contain it. When the peers see the same batch, the teacher runs once.

    Args:
        teacher: the pretrained teacher: a `keras.Model` (inputs -> logits over the peers' classes), the path of a
            saved `.keras` model, or a `keras.distillation.Distiller` (its teacher).
        weight: factor of the KD term (Hinton's alpha with the cross-entropy weighted 1 - alpha: see
            `keras_okd.methods.kd`).
        temperature: softening temperature.
        name: part name (default `"kd"`).

    Example:

    ```python
    teacher = keras.saving.load_model("resnet110_cifar100.keras")
    students = [keras_okd.models.get("resnet32", num_classes=100) for _ in range(2)]
    # offline KD and DML at once: each student learns from the teacher and from the other student
    distiller = keras_okd.OnlineDistiller(students, knowledge=[
        keras_okd.knowledge.FrozenTeacher(teacher, weight=0.9, temperature=4.0),
        keras_okd.knowledge.PeerDistillation(weight=1.0, temperature=4.0)])
    ```
    """

    needs_inputs = True

    def __init__(self, teacher, weight=1.0, temperature=4.0, name="kd", **kwargs):
        super().__init__(weight=weight, temperature=temperature, name=name, **kwargs)
        self.teacher = teacher_model(teacher)

    def build(self, input_shape):
        super().build(input_shape)
        try:
            shape = self.teacher.output_shape
        except (AttributeError, ValueError):
            shape = None
        if not (isinstance(shape, tuple) and len(shape) == 2 and isinstance(shape[-1], int)):
            raise ValueError(f"FrozenTeacher: the teacher {self.teacher.name!r} must output one tensor of logits "
                             f"(batch, classes); got output shape {shape}.")
        if shape[-1] != self.num_classes:
            raise ValueError(
                f"FrozenTeacher: the teacher {self.teacher.name!r} predicts {shape[-1]} classes but the peers "
                f"predict {self.num_classes}; distil from a teacher trained on the same classes."
            )

    def targets(self, peer_logits, context):
        inputs = context.get("inputs")
        if inputs is None:
            raise ValueError(
                "FrozenTeacher reads each peer's input batch (context['inputs']), which this OnlineDistiller does "
                "not provide; it needs a keras-okd distiller with the feature contract (knowledge parts' inputs)."
            )
        seen = {}
        logits = []
        for i in range(self.num_peers):
            x = inputs[i]
            if id(x) not in seen:  # peers fed the same batch: one teacher pass
                seen[id(x)] = ops.cast(self.teacher(x, training=False), "float32")
            logits.append(seen[id(x)])
        teacher_logits = ops.stop_gradient(ops.stack(logits, axis=1))
        return PartOutput(
            targets=soften(teacher_logits, self.temperature),
            pair_weights=ops.eye(self.num_peers, dtype="float32"),
        )

    def get_config(self):
        return {**super().get_config(), "teacher": keras.saving.serialize_keras_object(self.teacher)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        return cls(**config)
