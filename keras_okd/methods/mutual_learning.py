"""DML: Deep Mutual Learning (Zhang, Xiang, Hospedales and Lu, CVPR 2018), and the feature-level online methods
built on it (TSB Table 4)."""

import re

import keras

from keras_okd.distiller import OnlineDistiller
from keras_okd.knowledge import FeatureDistillation, PeerDistillation
from keras_okd.knowledge.features import METHODS, feature_part
from keras_okd.models import feature_layers
from keras_okd.distiller.peers import is_multi_branch
from keras_okd.methods import register


@register("dml")
def dml(students, temperature=1.0, weight=1.0, reduction="mean", features=None, num_train_samples=None, name="dml"):
    """Each student learns from the labels and from every other student's prediction, and, with `features`, from
    every other student's intermediate features.

    Loss of student i: `CE_i + weight * mean_{j != i} tau^2 KL(p_j || p_i)`, plus for each feature method its
    weight times its online loss (`keras_okd.knowledge.features`). DML's official code sums the KL terms over peers
    (`reduction="sum"`); most reimplementations, and this default, average them (identical for 2 students).

    `features` gives TSB Table 4's rows: classic feature-KD methods "modified ... into their online versions, built
    upon the scheme of DML" (`features="fitnet"`, `"at"`, `"crd"`, `"nst"`, `"sp"`, `"rkd"`, `"pkt"`), each with its
    paper's loss and the weights of CRD's benchmark code. Unless given `layers`, a method reads the layers that code
    reads, found by the zoo's names on the students (`keras_okd.models.feature_layers`): AT and NST every stage output,
    SP the last stage, FitNet the second, RKD, PKT and CRD the pooled features (on CIFAR ResNets: `stage_1..3`,
    `stage_3`, `stage_2`, `pool`); a multi-branch student's branch layers (the shared trunk's are the same for every
    branch). Students without the zoo's names need `layers`.

    Args:
        students: list of 2 or more `keras.Model`s producing logits over the same classes (or one multi-branch
            student: then give the feature parts layer paths, e.g. `{"at": {"layers": ["branch_{peer}/b{peer}_stage_3"]}}`).
        temperature: softening temperature (DML: 1).
        weight: factor of the KD term.
        reduction: `"mean"` or `"sum"` over the other students (the feature terms' default reduction too).
        features: None, or feature-level knowledge added to DML: a method name (`"at"`), a dict of method names to
            their parameters (`{"at": {"weight": 500.0}}`), a `keras_okd.knowledge.FeatureDistillation` part, or a
            list of these.
        num_train_samples: the training set's size, needed by CRD's memory (the experiment runner passes it).
        name: model name.

    Returns:
        An `OnlineDistiller`.

    Example:

    ```python
    distiller = keras_okd.methods.dml([student_a, student_b])
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    distiller.fit(train_ds, epochs=200)

    # TSB Table 4's "AT" row: DML plus attention transfer on the three stage outputs
    students = [keras_okd.models.get("resnet32", num_classes=100) for _ in range(2)]
    distiller = keras_okd.methods.dml(students, features="at")
    # its "CRD" row: the contrastive memory needs the training set's size
    distiller = keras_okd.methods.dml(students, features="crd", num_train_samples=50_000)
    ```
    """
    parts = [PeerDistillation(weight=weight, temperature=temperature, reduction=reduction)]
    parts += _feature_parts(features, reduction, num_train_samples, students)
    return OnlineDistiller(students, knowledge=parts, name=name)


def _zoo_layers(students):
    """`(stages, pool)`: the stage outputs (in order) and pooled features every student has under the zoo's names,
    as the feature parts name them (paths into a multi-branch student's branches); None without such names."""
    if is_multi_branch(students):
        names = [n for n in feature_layers(students) if n.startswith("branch_{peer}/")]
    elif not isinstance(students, (list, tuple)) or not students or not all(
            isinstance(s, keras.Model) for s in students):
        return None  # the distiller refuses these, with its own message
    else:
        found = [list(feature_layers(s)) for s in students]
        names = [n for n in found[0] if all(n in other for other in found[1:])]
    stages = [n for n in names if re.search(r"stage_\d+$", n)]
    pools = [n for n in names if n.endswith("pool")]
    return (stages, pools[0]) if stages and pools else None


def _zoo_feature_layers(part_class, students):
    """The layers a feature part of class `part_class` reads on `students` by default: its `default_layers` of the
    stage outputs and pooled features every student has under the zoo's names (`_zoo_layers`); None for students
    without those names."""
    layout = _zoo_layers(students)
    return None if layout is None else tuple(part_class.default_layers(*layout))


def _feature_parts(features, reduction, num_train_samples, students):
    """The feature parts that `features` names (see `dml`)."""
    if features is None:
        return []

    def make(method, params):
        key = str(method).lower()
        found = _zoo_feature_layers(METHODS[key], students) if "layers" not in params and key in METHODS else None
        if found is not None:
            params = {**params, "layers": list(found)}
        return feature_part(method, num_train_samples, **{"reduction": reduction, **params})

    if isinstance(features, (str, dict, FeatureDistillation)):
        features = [features]
    parts = []
    for item in features:
        if isinstance(item, FeatureDistillation):
            parts.append(item)
        elif isinstance(item, str):
            parts.append(make(item, {}))
        elif isinstance(item, dict):
            for method, params in item.items():
                if params is not None and not isinstance(params, dict):
                    raise ValueError(f"dml: features[{method!r}] must be a dict of the part's parameters, got "
                                     f"{params!r}.")
                parts.append(make(method, params or {}))
        else:
            raise ValueError(
                f"dml: features must name feature methods ({', '.join(METHODS)}), map them to parameters, or be "
                f"keras_okd.knowledge.FeatureDistillation parts; got {item!r}."
            )
    return parts
