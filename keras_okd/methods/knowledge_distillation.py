"""KD: offline knowledge distillation from a pretrained teacher (Hinton, Vinyals and Dean, "Distilling the knowledge
in a neural network", NIPS Deep Learning Workshop 2015); the "KD" row of DKEL's Table 2."""

from keras_okd.distiller import OnlineDistiller
from keras_okd.knowledge import FrozenTeacher
from keras_okd.methods._checks import is_multi_branch
from keras_okd.methods import register


@register("kd")
def kd(students, teacher, temperature=4.0, alpha=0.9, views=None, name="kd"):
    """Each student (or branch) learns from the labels and from a pretrained, frozen teacher:

        L_i = (1 - alpha) CE(y, z_i) + alpha tau^2 KL(softmax(t(x_i) / tau) || softmax(z_i / tau))

    with `t(x_i)` the teacher's logits on the batch student i saw (its own view with `views`). The students do not
    learn from each other: a group trained with `kd` is a group of independent offline-KD runs in one model, as the
    tables' single-network rows average. To add online knowledge, put the `FrozenTeacher` part next to peer parts
    (see `keras_okd.knowledge.FrozenTeacher`).

    Defaults tau = 4 and alpha = 0.9 (cross-entropy 0.1): the setting of the CIFAR KD benchmark of Tian, Krishnan
    and Isola (CRD, ICLR 2020), the usual choice for Hinton's KD on CIFAR; DKEL does not state its KD setting. The
    OKDDip authors' KD baseline uses `CE + tau^2 KL` at tau = 3, which is `kd(..., temperature=3.0, alpha=0.5)` up to a
    factor 2 on the whole loss.

    For one student use Keras's own `keras.distillation.Distiller(teacher, student,
    keras.distillation.LogitsDistillation(temperature=tau, loss=keras.losses.KLDivergence()),
    student_loss_weight=1 - alpha)`, compiled with `loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)`:
    it minimises the same loss (tested against this preset), and `kd` refuses a single student with that advice.
    Pass the `KLDivergence` instance: in Keras 3.15 `LogitsDistillation`'s default `loss="kl_divergence"` resolves to
    a plain function, so it skips its softmax and `tau^2` and applies the KL to the scaled logits themselves. Any
    teacher a Keras `Distiller` used can be passed here, the `Distiller` itself included.

    Args:
        students: a list of 2 or more `keras.Model`s, or one `keras_okd.models.multi_branch` model (each branch is
            distilled from the teacher).
        teacher: a `keras.Model` mapping the inputs to logits over the students' classes, the path of a saved
            `.keras` model, or a `keras.distillation.Distiller`. It is frozen and saved with the distiller, never with
            the students.
        temperature: softening temperature tau.
        alpha: weight of the KD term in [0, 1]; the cross-entropy gets `1 - alpha`.
        views: per-student augmentation (a Keras layer); the teacher sees each student's view.
        name: model name.

    Returns:
        An `OnlineDistiller` with one `FrozenTeacher` part (`"kd"`) and `ce_weight = 1 - alpha`.

    Example:

    ```python
    teacher = keras.saving.load_model("runs/cifar100_resnet110/seed_0/student_0.keras")
    students = [keras_okd.models.get("resnet32", num_classes=100) for _ in range(2)]
    distiller = keras_okd.methods.kd(students, teacher)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), coupled_weight_decay=5e-4)
    distiller.fit(train_ds, epochs=300)
    ```
    """
    if teacher is None:
        raise ValueError(
            "kd needs a pretrained teacher: pass teacher=<a keras.Model, or the path of a saved .keras model> (in a "
            "config: --set method.params.teacher=PATH)."
        )
    single = not isinstance(students, (list, tuple)) and not is_multi_branch(students)
    if single or (isinstance(students, (list, tuple)) and len(students) < 2):
        raise ValueError(
            "kd trains 2 or more students (or the branches of one multi-branch student) side by side. For one "
            "student, Keras's own keras.distillation.Distiller(teacher, student, "
            "keras.distillation.LogitsDistillation(temperature=tau, loss=keras.losses.KLDivergence()), "
            "student_loss_weight=1 - alpha) minimises the same loss; compile it with "
            "loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)."
        )
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"kd: alpha (the weight of the KD term) must lie in [0, 1], got {alpha}.")
    part = FrozenTeacher(teacher, weight=float(alpha), temperature=temperature, name="kd")
    return OnlineDistiller(students, [part], views=views, ce_weight=1.0 - float(alpha), name=name)
