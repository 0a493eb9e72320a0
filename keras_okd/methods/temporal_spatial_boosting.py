"""TSB: Online Knowledge Distillation by Temporal-Spatial Boosting (Chengcheng Li, Zi Wang and Hairong Qi, WACV 2022).

TSB = DML's peer teaching with two better teachers: a temporal accumulator (per-sample EMA of each student's past
predictions, bias-corrected) and a spatial integrator (the mean of all students' predictions). The paper's ablation
rows (Table 5) are switches of this preset:

| row      | call                                                     |
|----------|----------------------------------------------------------|
| DML      | `tsb(students, n, temporal=False, spatial=False)`        |
| DML + TA | `tsb(students, n, spatial=False)`                        |
| DML + SI | `tsb(students, n, temporal=False)`                       |
| TSB      | `tsb(students, n)`                                       |

In the DML row, each student learns from the other students' current predictions, with the same temperature,
weight and warm-up as the TA term it is replaced by: the TA term with beta = 0 is exactly that.
"""

from keras_okd.distiller import OnlineDistiller
from keras_okd.knowledge import PeerDistillation, SpatialIntegrator, TemporalAccumulator, WarmUp
from keras_okd.methods import register


@register("tsb")
def tsb(
    students,
    num_train_samples,
    temporal=True,
    spatial=True,
    beta=0.8,
    temperature=4.0,
    lambda_ta=0.5,
    lambda_si=0.5,
    warmup_epochs=20,
    bank_dtype="float32",
    name="tsb",
):
    """Temporal-spatial boosting with the paper's defaults (CIFAR recipe: tau 4, beta 0.8, lambdas 0.5, warm-up 20).

    Loss of student i: `CE_i + lambda_ta * w(t) * sum_{j != i} KD(TA_j || p_i) + lambda_si * w(t) * KD(SI || p_i)`,
    `KD = tau^2 KL(target || student)`, and `w(t)` zero for the first `warmup_epochs` epochs, then one (the paper
    zeroes all KL terms during warm-up). The accumulator needs each training sample's index: numpy arrays given to
    `fit` use their positions by themselves; a `tf.data` pipeline carries them with `keras_okd.data.with_index`
    (before it shuffles).

    Args:
        students: list of 2 or more `keras.Model`s producing logits over the same classes.
        num_train_samples: size N of the training set; sizes the accumulator bank (N x students x classes floats).
        temporal: include the temporal accumulator; False replaces it by plain peer distillation (DML).
        spatial: include the spatial integrator.
        beta: EMA momentum of the accumulator.
        temperature: softening temperature of every KD term.
        lambda_ta: weight of the temporal (or, with `temporal=False`, peer) term.
        lambda_si: weight of the spatial term.
        warmup_epochs: epochs with KD weight 0.
        bank_dtype: storage dtype of the accumulator bank: `"float32"`, or `"float16"` / `"bfloat16"` to halve its
            memory (the EMA and bias correction are still computed in float32; only the stored values are rounded).
        name: model name.

    Returns:
        An `OnlineDistiller`.

    Example:

    ```python
    students = [keras_okd.models.get("resnet32", num_classes=100), keras_okd.models.get("wrn_16_4", num_classes=100)]
    distiller = keras_okd.methods.tsb(students, num_train_samples=50_000)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      coupled_weight_decay=5e-4)                # PyTorch-style decay, as the paper's recipe
    distiller.fit(x_train, y_train, epochs=240, batch_size=64)  # numpy arrays: their positions are the indices
    distiller.fit(keras_okd.data.with_index(train_ds).shuffle(50_000).batch(64), epochs=240)   # or tf.data
    ```
    """
    warmup = WarmUp(warmup_epochs) if warmup_epochs else None
    if temporal:
        peer = TemporalAccumulator(
            num_train_samples, beta=beta, weight=lambda_ta, temperature=temperature, reduction="sum",
            bank_dtype=bank_dtype, schedule=warmup,
        )
    else:
        peer = PeerDistillation(weight=lambda_ta, temperature=temperature, reduction="sum", name="dml", schedule=warmup)
    knowledge = [peer]
    if spatial:
        knowledge.append(SpatialIntegrator(weight=lambda_si, temperature=temperature, schedule=warmup))
    return OnlineDistiller(students, knowledge=knowledge, name=name)
