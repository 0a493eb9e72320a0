"""PCL: Peer Collaborative Learning for Online Knowledge Distillation (Wu and Gong, AAAI 2021)."""

from keras_okd.distiller import OnlineDistiller
from keras_okd.knowledge import PeerEnsemble, TeacherPeers
from keras_okd.methods._checks import branch_student
from keras_okd.methods._schedules import optional_rampup
from keras_okd.methods import register


@register("pcl")
def pcl(student, views=None, temperature=3.0, teacher_eta=0.001, rampup_epochs=80, num_branches=None, name="pcl"):
    """Peer ensemble + peer mean teacher on a multi-branch student (DKEL's Eq. 2-5).

    Loss: `sum_p [CE_p + w(e) KD(E || s_p) + w(e) mean_{j != p} KD(t_j || s_p)] + CE_E`, with E the peer-ensemble
    head on the branches' concatenated features, t the mean teacher (`t = eta*s + (1-eta)*t` after each step), and
    w(e) the ramp-up `exp(-5 (1 - e/80)^2)` (the intended formula; the public reimplementation's bug leaves it ~0).
    Each branch sees its own augmented view; evaluation and deployment use the mean teacher.

    Args:
        student: a `keras_okd.models.multi_branch(..., per_branch_inputs=True)` model.
        views: per-branch augmentation, a Keras layer (e.g. `keras_okd.data.peer_views(32, 32)`); None feeds every
            branch the same batch.
        temperature: KD temperature.
        teacher_eta: EMA step of the mean teacher, in (0, 1] (0.001: the teacher keeps 0.999 of itself).
        rampup_epochs: length of the ramp-up w shared by both KD terms (PCL: 80 epochs); 0 disables it.
        num_branches: if given, the student must have this many branches.
        name: model name.

    Returns:
        An `OnlineDistiller` with the parts `"pe"` (the peer ensemble, which owns its head) and `"pm"` (the peer
        mean teacher), deploying the mean teacher.

    Example:

    ```python
    student = keras_okd.models.multi_branch("resnet32", 3, num_classes=100, per_branch_inputs=True)
    distiller = keras_okd.methods.pcl(student, views=keras_okd.data.peer_views(32, 32))
    ```
    """
    branch_student(student, "pcl", num_branches, per_branch_inputs=views is not None)
    rampup = optional_rampup(rampup_epochs)
    parts = [PeerEnsemble(temperature=temperature, name="pe", schedule=rampup),
             TeacherPeers(temperature=temperature, name="pm", schedule=rampup)]
    return OnlineDistiller(
        student, parts, views=views, teacher_eta=teacher_eta, deploy="teacher", name=name
    )
