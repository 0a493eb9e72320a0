"""Independent training: the students in one model with cross-entropy only (the papers' "Ind" baseline)."""

from keras_okd.distiller import OnlineDistiller
from keras_okd.methods import register


@register("independent")
def independent(students, name="independent"):
    """Train the students side by side with no knowledge transfer (CE only); the baseline of every table.

    Args:
        students: list of 2 or more `keras.Model`s producing logits over the same classes.
        name: model name.

    Returns:
        An `OnlineDistiller` without knowledge parts.

    Example:

    ```python
    baseline = keras_okd.methods.independent([student_a, student_b])
    baseline.compile(optimizer="sgd")
    ```
    """
    return OnlineDistiller(students, knowledge=[], name=name)
