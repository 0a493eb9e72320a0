"""ONE: Knowledge Distillation by On-the-Fly Native Ensemble (Lan, Zhu and Gong, NeurIPS 2018)."""

from keras_okd.distiller import OnlineDistiller
from keras_okd.knowledge import GateEnsemble
from keras_okd.methods._checks import branch_student
from keras_okd.methods._schedules import optional_rampup
from keras_okd.methods import register


@register("one")
def one(student, temperature=3.0, rampup_epochs=80, num_branches=None, name="one"):
    """Gated native ensemble on a multi-branch student.

    Loss: `sum_b CE_b + CE(e) + w(e) * sum_b tau^2 KL(softmax(e/tau) || softmax(z_b/tau))`, e = sum_b g_b z_b with
    g the gate (pooled shared features -> Dense(m) -> BN -> ReLU -> softmax), w the 80-epoch ramp-up.

    Args:
        student: a `keras_okd.models.multi_branch` model (one shared input).
        temperature: KD temperature (ONE: 3).
        rampup_epochs: length of the ramp-up w of the KD term (ONE: 80 epochs); 0 disables it.
        num_branches: if given, the student must have this many branches.
        name: model name.

    Returns:
        An `OnlineDistiller` with one `GateEnsemble` part (`"gate"`, which owns the gate).

    Example:

    ```python
    student = keras_okd.models.multi_branch("resnet110_bottleneck", num_branches=3, num_classes=100)  # ONE's ResNet-110
    distiller = keras_okd.methods.one(student, num_branches=3)
    ```
    """
    branch_student(student, "one", num_branches)
    part = GateEnsemble(temperature=temperature, name="gate", schedule=optional_rampup(rampup_epochs))
    return OnlineDistiller(student, [part], name=name)
