"""SwitOKD: Switchable Online Knowledge Distillation (Biao Qian, Yang Wang, Hongzhi Yin, Richang Hong and Meng Wang,
ECCV 2022; code: github.com/hfutqian/SwitOKD)."""

from keras_okd.distiller import OnlineDistiller
from keras_okd.knowledge.switchable import SwitchableDistillation
from keras_okd.methods import register
from keras_okd.methods._checks import independent_students


@register("switokd")
def switokd(students, teacher=0, temperature=1.0, weight=1.0, require_teacher_ahead=True, name="switokd"):
    """A teacher and a student learn from each other as in DML, except that the teacher pauses (expert mode) while
    the distillation gap `||p_t - p_s||_1` exceeds the adaptive switching threshold; the student always learns
    (`keras_okd.knowledge.switchable`, which lists where the authors' code departs from it).

    Loss: student `CE_s + weight * tau^2 KL(p_t || p_s)`; teacher, in learning mode only, `CE_t + weight * tau^2
    KL(p_s || p_t)`. Defaults of the authors' CIFAR code: tau 1, weight 1. The logs' `switokd` term of the teacher is
    0 in expert-mode steps; `distiller.knowledge[0].expert_fraction()` is the fraction of steps it was paused.

    Args:
        students: two `keras.Model`s producing logits over the same classes: the teacher (the larger network) and the
            student.
        teacher: which of the two is the teacher (0 or 1).
        temperature: tau of the KD terms and of the distributions the switch compares.
        weight: factor of the KD terms.
        require_teacher_ahead: pause the teacher only when it is also closer to the labels than the student (the
            authors' code).
        name: model name.

    Returns:
        An `OnlineDistiller`.

    Example:

    ```python
    pair = [keras_okd.models.get("wrn_16_2", num_classes=100), keras_okd.models.get("mobilenet_v2_x0_5",
                                                                                    num_classes=100)]
    distiller = keras_okd.methods.switokd(pair, teacher=0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), coupled_weight_decay=5e-4)
    ```
    """
    independent_students(students, "switokd")
    part = SwitchableDistillation(teacher=teacher, weight=weight, temperature=temperature,
                                  require_teacher_ahead=require_teacher_ahead)
    return OnlineDistiller(students, knowledge=[part], name=name)
