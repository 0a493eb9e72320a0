"""OKDDip: Online Knowledge Distillation with Diverse Peers (Chen, Mei, Wang, Feng and Chen, AAAI 2020)."""

from keras_okd.distiller import OnlineDistiller
from keras_okd.knowledge import DiversePeers
from keras_okd.methods._checks import branch_student
from keras_okd.methods._schedules import optional_rampup
from keras_okd.methods import register


@register("okddip")
def okddip(student, temperature=3.0, weight=1.0, rampup_epochs=80, projection_factor=8, target_gradient="attention",
           include_self=True, num_branches=None, name="okddip"):
    """Two-level distillation with diverse peers on a multi-branch student of M >= 3 branches.

    Branches 0 .. M-2 are auxiliary peers, branch M-1 the group leader. Loss:

        sum_i CE_i + weight * w(e) * [ sum_{a < M-1} KD(t_a || z_a) + KD(mean_{a < M-1} z_a || z_leader) ],
        t_a = sum_b softmax_b(L(h_a) . E(h_b)) z_b

    with `KD = tau^2 KL(softmax(t / tau) || softmax(z / tau))`, h the branches' pooled features, L and E the query and
    key projections (trained, owned by the `DiversePeers` part) and w(e) the ramp-up `exp(-5 (1 - e / 80)^2)`.
    Defaults as the authors' code: tau = 3, weight 1, the 80-epoch ramp-up, projections of width F // 8; that code
    defaults to 4 branches (3 auxiliary peers and the leader), DKEL's comparison uses 3.

    The group leader is the network deployed (`deploy_peer=M - 1`): `predict` returns its probabilities and
    `distiller.deployed_model()` / `distiller.peer_model(M - 1)` export it (trunk + last branch, plain Keras).
    `predict` and `ensemble_model` still average every branch, and the logs' `ensemble_accuracy` is that average;
    the leader's own accuracy is logged as `branch_{M-1}_accuracy`.

    Gradients: the first-level targets pass gradient to the attention projections only (`target_gradient`, see
    `keras_okd.knowledge.DiversePeers`); the authors' code detaches no target (`target_gradient="all"`).

    Peer a's aggregation includes its own logits, as in the authors' code (`include_self=True`); the abstract speaks
    of "predictions of other auxiliary peers" (`include_self=False`). With its own logits included, the first-level
    loss of peer a is zero when a attends only to itself, and the projections, trained through that loss, are
    pulled toward this solution; `benchmarks/okddip_attention.py` prints the attention the peers reach.

    Args:
        student: a `keras_okd.models.multi_branch` model with 3 or more branches (one shared input).
        temperature: KD temperature of both levels.
        weight: factor of both levels.
        rampup_epochs: ramp-up length; 0 disables it.
        projection_factor: the query / key projections map F features to F // projection_factor.
        target_gradient: `"attention"`, `"all"` (the authors' code) or `"none"`.
        include_self: whether an auxiliary peer's aggregation includes its own logits.
        num_branches: if given, the student must have this many branches.
        name: model name.

    Returns:
        An `OnlineDistiller` with one `DiversePeers` part (`"okddip"`).

    Example:

    ```python
    student = keras_okd.models.multi_branch("resnet32", num_branches=4, num_classes=100)   # 3 peers + the leader
    distiller = keras_okd.methods.okddip(student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), coupled_weight_decay=5e-4)
    distiller.fit(train_ds, epochs=300)
    distiller.deployed_model().save("okddip_leader.keras")   # = distiller.peer_model(3)

    # as the authors' code, which detaches no target; include_self=False would read the abstract instead
    authors_code = keras_okd.methods.okddip(student, target_gradient="all")
    ```
    """
    branch_student(student, "okddip", num_branches)
    found = len(student.output["logits"])
    if found < 3:
        raise ValueError(
            f"okddip needs a student with at least 3 branches (2 or more auxiliary peers and the group leader); "
            f"{student.name} has {found}. Build it with keras_okd.models.multi_branch(name, num_branches=4)."
        )
    part = DiversePeers(weight=weight, temperature=temperature, projection_factor=projection_factor,
                        target_gradient=target_gradient, include_self=include_self, name="okddip",
                        schedule=optional_rampup(rampup_epochs))
    leader = len(student.output["logits"]) - 1
    return OnlineDistiller(student, [part], deploy_peer=leader, name=name)
