"""DML: Deep Mutual Learning (Zhang, Xiang, Hospedales and Lu, CVPR 2018)."""

from keras_okd.distiller import OnlineDistiller
from keras_okd.knowledge import PeerDistillation


def dml(students, temperature=1.0, weight=1.0, reduction="mean", name="dml"):
    """Each student learns from the labels and from every other student's prediction.

    Loss of student i: `CE_i + weight * mean_{j != i} tau^2 KL(p_j || p_i)`. DML's official code sums the KL terms
    over peers (`reduction="sum"`); most reimplementations, and this default, average them (identical for 2 students).

    Args:
        students: list of 2 or more `keras.Model`s producing logits over the same classes.
        temperature: softening temperature (DML: 1).
        weight: factor of the KD term.
        reduction: `"mean"` or `"sum"` over the other students.
        name: model name.

    Returns:
        An `OnlineDistiller`.

    Example:

    ```python
    distiller = keras_okd.methods.dml([student_a, student_b])
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    distiller.fit(train_ds, epochs=200)
    ```
    """
    part = PeerDistillation(weight=weight, temperature=temperature, reduction=reduction)
    return OnlineDistiller(students, knowledge=[part], name=name)
