"""CL: Collaborative Learning for Deep Neural Networks (Guocong Song and Wei Chai, NeurIPS 2018), "CL-ILR"."""

from keras_okd.distiller import OnlineDistiller
from keras_okd.knowledge import PeerConsensus
from keras_okd.methods._checks import branch_student
from keras_okd.methods._schedules import optional_rampup
from keras_okd.models import scale_trunk_gradients, trunk_gradient_scale
from keras_okd.methods import register


@register("cl")
def cl(student, temperature=2.0, beta=0.5, backprop_rescaling=True, rampup_epochs=0, num_branches=None, name="cl"):
    """Collaborative learning with intermediate-level representation sharing on a multi-branch student.

    Each head h (a branch of one network that shares its trunk) learns from the labels and from the consensus of
    the other heads, with the soft target detached:

        L = sum_h [ beta * CE(y, z_h) + (1 - beta) * tau^2 KL(q_h || softmax(z_h / tau)) ],
        q_h = softmax(mean_{j != h} z_j / tau)

    ILR sharing with backpropagation rescaling: the gradient flowing from the H heads back into the shared trunk is
    multiplied by 1/H (a `keras_okd.models.GradientScale` layer where the trunk feeds the branches), so the trunk gets
    the mean of the heads' gradients and each head's own layers its full gradient. A student built without it is
    wrapped by `keras_okd.models.scale_trunk_gradients` (same layers and weights; the model you passed still saves
    as plain Keras). Any head, e.g. `distiller.peer_model(0)`, is the deployed network.

    Defaults: tau = 2 and beta = 0.5, CL's CIFAR setting. The soft term uses keras-okd's `tau^2 KL` (Hinton's scaling,
    as every method here); the paper's cross-entropy with the soft target has the same gradient up to that factor
    (the target is a constant), so `beta` compares across temperatures. Variants seen in public code: the OKDDip
    authors' "CL-ILR" baseline (the comparison DKEL and PCL report) uses tau = 3, CE + 1.0 x the KD term and the
    80-epoch ramp-up, i.e. `cl(s, temperature=3.0, rampup_epochs=80)` up to a factor 2 on the whole loss, and does
    not detach the soft target.

    Args:
        student: a `keras_okd.models.multi_branch` model (one shared input), H >= 2 branches.
        temperature: softening temperature tau of the soft target and of the heads.
        beta: weight of the hard (label) loss in [0, 1]; the soft loss gets `1 - beta`.
        backprop_rescaling: rescale the trunk's gradient by 1/H (CL-ILR). False trains without it (and refuses a
            student that rescales).
        rampup_epochs: optional ramp-up `exp(-5 (1 - e / length)^2)` of the soft term (0: none, as the paper).
        num_branches: if given, the student must have this many branches.
        name: model name.

    Returns:
        An `OnlineDistiller` with one `PeerConsensus` part (`"cl"`) and `ce_weight = beta`.

    Example:

    ```python
    student = keras_okd.models.multi_branch("resnet32", num_branches=3, num_classes=100)
    distiller = keras_okd.methods.cl(student)   # wrapped with the trunk's gradient scaled by 1/3 (ILR sharing)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), coupled_weight_decay=5e-4)
    distiller.fit(train_ds, epochs=300)
    distiller.peer_model(0).save("cl_head0.keras")      # trunk + head 0, plain Keras

    # the OKDDip authors' "CL-ILR" baseline (the one DKEL and PCL report), up to a factor 2 on the whole loss
    baseline = keras_okd.methods.cl(student, temperature=3.0, rampup_epochs=80)
    ```
    """
    branch_student(student, "cl", num_branches)
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"cl: beta (the weight of the label loss) must lie in [0, 1], got {beta}.")
    scale = trunk_gradient_scale(student)
    if backprop_rescaling and scale is None:
        student = scale_trunk_gradients(student)
    elif not backprop_rescaling and scale is not None:
        raise ValueError(
            f"cl: backprop_rescaling=False but the student already rescales its trunk's gradients by {scale}; "
            "build it without gradient_scale."
        )
    part = PeerConsensus(weight=1.0 - float(beta), temperature=temperature, name="cl",
                         schedule=optional_rampup(rampup_epochs))
    return OnlineDistiller(student, [part], ce_weight=float(beta), name=name)
