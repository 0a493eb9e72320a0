"""KDCL: Online Knowledge Distillation via Collaborative Learning (Guo et al., CVPR 2020)."""

from keras_okd.distiller import OnlineDistiller
from keras_okd.knowledge import EnsembleTeacher
from keras_okd.methods._checks import independent_students
from keras_okd.methods import register


@register("kdcl")
def kdcl(students, views=None, mode="mean_logits", temperature=4.0, alpha=0.5, name="kdcl"):
    """Each student learns from the labels and from one ensemble teacher of all students' logits.

    Loss of student i: `(1 - alpha) CE_i + alpha tau^2 KL(softmax(T/tau) || softmax(z_i/tau))`, T the ensemble teacher:
    `"mean_logits"` (the public code) or `"min_logit"` (KDCL-MinLogit). Each student sees its own augmentation
    (`views`).

    Args:
        students: list of 2 or more `keras.Model`s.
        views: per-student augmentation (a Keras layer); None feeds every student the same batch.
        mode: `"mean_logits"` or `"min_logit"`.
        temperature: KD temperature (4).
        alpha: weight of the KD term, in [0, 1]; CE gets `1 - alpha`.
        name: model name.

    Returns:
        An `OnlineDistiller`.

    Example:

    ```python
    distiller = keras_okd.methods.kdcl([s1, s2, s3], views=keras_okd.data.peer_views(32, 32))
    ```
    """
    independent_students(students, "kdcl")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"kdcl: alpha must lie in [0, 1], got {alpha}.")
    part = EnsembleTeacher(mode=mode, weight=alpha, temperature=temperature)
    return OnlineDistiller(students, [part], views=views, ce_weight=1.0 - alpha, name=name)
