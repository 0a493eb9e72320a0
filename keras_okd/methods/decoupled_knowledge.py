"""DKEL: Decoupled Knowledge with Ensemble Learning for online distillation (Shao et al.), built on PCL."""

from keras_okd.distiller import OnlineDistiller
from keras_okd.knowledge import Decay, PeerEnsemble, TeacherEnsemble, TeacherPeers
from keras_okd.methods._checks import branch_student
from keras_okd.methods._schedules import optional_rampup
from keras_okd.methods import register


@register("dkel")
def dkel(
    student,
    views=None,
    temperature=3.0,
    teacher_eta=0.001,
    gamma=0.5,
    decay="exponential",
    total_epochs=None,
    init_steps=1,
    init_learning_rate=0.01,
    decoupled=True,
    decaying_ensemble=True,
    ensemble_average="logits",
    rampup_epochs=0,
    num_branches=None,
    name="dkel",
):
    """DKEL (paper Eq. 12): `sum_p [CE_p + L_pe^p + omega(e) L_ek^p + (1 - omega(e)) L_dk^p] + CE_E`.

    - L_pe: KD from the peer-ensemble head E (trained by its own CE), as in PCL.
    - L_dk, decoupled knowledge: KD from the mean teacher's other peers j != p, averaged (Eq. 6; the same formula as
      PCL's L_pm, Eq. 4). The teacher is an EMA copy of the student (`t = eta*s + (1-eta)*t` after every step) whose
      start is decoupled from the student (Algorithm 1, steps 2-3): copy the student, then train the teacher alone
      with cross-entropy for `init_steps` batches of plain SGD at `init_learning_rate` (paper: 1 iteration at 0.01).
      The first EMA update keeps `1 - eta` of that initialisation (the public code's first update copies the student
      and erases it; see REFERENCE.md).
    - L_ek, decaying ensemble: KD from the ensemble of the teacher's other peers, weighted omega(e) = exp(-gamma e)
      (or the cosine / linear shapes of the paper's Fig. 7 with `total_epochs`). The ensemble averages the teacher
      peers' logits, then softens them (Eq. 10, with t the logits of Sec. 3.1: "the logits of teacher peers are
      assembled"; the public code does the same); `ensemble_average="probabilities"` averages their softened
      probabilities instead.
    Evaluation and deployment use the teacher. No ramp-up by default: Eq. 12 has none (`rampup_epochs=80` adds the
    intended ramp-up on every KD term).

    The decoupled initialisation minimises the SUM of the teacher peers' cross-entropies, so each teacher peer's
    own weights take exactly the step `-lr * grad CE_p` at the paper's lr 0.01 ("optimize all peers of t with
    cross entropy loss", Algorithm 1), and the objective is the student's own CE term of Eq. 12 (a sum over peers)
    at a small learning rate. DKEL's public code averages them instead, and runs 2 steps (its loop breaks after the
    step of iteration `init`) at lr 0.001 (its lr / 100) with weight decay 5e-4, none of which the paper states; for
    plain SGD a mean at lr `a` is a sum at lr `a / m`, so `init_learning_rate=0.001 / 3, init_steps=2` gives the
    code's steps for 3 branches, without its weight decay.

    Ablations (paper Table 3), each row changing the Baseline in one component only:

    | row                    | call                                                | knowledge terms                |
    |------------------------|-----------------------------------------------------|--------------------------------|
    | Baseline (PCL's loss)  | `dkel(s, decoupled=False, decaying_ensemble=False)` | pe + pm                        |
    | Baseline + L_dk        | `dkel(s, decaying_ensemble=False)`                  | pe + dk                        |
    | Baseline + L_ek        | `dkel(s, decoupled=False)`                          | pe + omega ek + (1 - omega) pm |
    | Baseline + L_dk + L_ek | `dkel(s)`                                           | pe + omega ek + (1 - omega) dk |

    `decoupled` switches the teacher's decoupled initialisation: without it the teacher starts as a plain copy of
    the student, as PCL's temporal mean teacher does, and the teacher-peer term is PCL's L_pm (logged `pm`), the same
    formula as L_dk. `decaying_ensemble` switches the decaying ensemble scheme of Eq. 12: L_ek weighted omega(e)
    and the teacher-peer term weighted 1 - omega(e); without it the teacher-peer term has weight 1. Temperature,
    EMA step and ramp-up are the same in every row, so the Baseline row is PCL's loss without PCL's own 80-epoch
    ramp-up (`keras_okd.methods.pcl` has it; pass `rampup_epochs=80` to every row to compare with it instead).

    Args:
        student: a `keras_okd.models.multi_branch(..., per_branch_inputs=True)` model.
        views: per-branch augmentation (a Keras layer); None feeds every branch the same batch.
        temperature: KD temperature (DKEL's code uses 3).
        teacher_eta: EMA step, in (0, 1].
        gamma: decay rate of omega, > 0 (paper: 0.5).
        decay: `"exponential"`, `"cosine"` or `"linear"`.
        total_epochs: length E of the cosine and linear decays.
        init_steps: CE steps of the teacher's decoupled initialisation (0: plain copy).
        init_learning_rate: their learning rate.
        decoupled: give the teacher the decoupled initialisation (L_dk); False: a plain mean teacher (PCL's L_pm).
        decaying_ensemble: add L_ek with weight omega(e) and weigh the teacher-peer term 1 - omega(e).
        ensemble_average: how the teacher ensemble averages peers: `"logits"` (the paper's and the public code's)
            or `"probabilities"`.
        rampup_epochs: optional ramp-up length on every KD term.
        num_branches: if given, the student must have this many branches.
        name: model name.

    Returns:
        An `OnlineDistiller` with the parts `"pe"`, `"dk"` (`"pm"` without `decoupled`) and, with
        `decaying_ensemble`, `"ek"`, deploying the teacher.

    Example:

    ```python
    student = keras_okd.models.multi_branch("resnet32", 3, num_classes=100, per_branch_inputs=True)
    views = keras_okd.data.peer_views(32, 32)
    distiller = keras_okd.methods.dkel(student, views=views)   # Eq. 12, omega(e) = exp(-0.5 e)
    # Fig. 7's cosine decay of omega over a 300-epoch run, instead
    distiller = keras_okd.methods.dkel(student, views=views, decay="cosine", total_epochs=300)
    ```
    """
    branch_student(student, "dkel", num_branches, per_branch_inputs=views is not None)
    if not float(gamma) > 0:
        raise ValueError(f"dkel: gamma must be > 0, got {gamma}.")
    teacher_term = "dk" if decoupled else "pm"
    rampup = optional_rampup(rampup_epochs)
    # omega(e) weighs the teacher ensemble, 1 - omega(e) the teacher-peer term (Eq. 12); each times the ramp-up
    omega = [Decay(decay, gamma, total_epochs)] if decaying_ensemble else []
    one_minus_omega = [Decay(decay, gamma, total_epochs, complement=True)] if decaying_ensemble else []
    parts = [PeerEnsemble(temperature=temperature, name="pe", schedule=rampup),
             TeacherPeers(temperature=temperature, name=teacher_term, schedule=one_minus_omega + rampup)]
    if decaying_ensemble:
        parts.append(TeacherEnsemble(temperature=temperature, average=ensemble_average, name="ek",
                                     schedule=omega + rampup))
    return OnlineDistiller(
        student,
        parts,
        views=views,
        teacher_eta=teacher_eta,
        teacher_init_steps=init_steps if decoupled else 0,
        teacher_init_learning_rate=init_learning_rate,
        deploy="teacher",
        name=name,
    )
