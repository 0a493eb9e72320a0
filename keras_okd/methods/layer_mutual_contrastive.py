"""L-MCL: Online Knowledge Distillation via Mutual Contrastive Learning for Visual Recognition (Chuanguang Yang,
Zhulin An, Helong Zhou, Fuzhen Zhuang, Yongjun Xu and Qian Zhang, TPAMI 2023; code: github.com/winycg/L-MCL)."""

from keras_okd.distiller import OnlineDistiller
from keras_okd.knowledge.features.lmcl import LayerMutualContrastive
from keras_okd.methods import register
from keras_okd.methods._checks import independent_students
from keras_okd.methods.mutual_learning import _zoo_feature_layers
from keras_okd.models.auxiliary import auxiliary_branch


@register("lmcl")
def lmcl(students, num_train_samples, alpha=0.1, beta=0.1, gamma=1.0, lam=1.0, tau=0.1, kd_temperature=3.0,
         embedding_dim=128, num_negatives=8192, momentum=0.5, layers=None, memory_dtype="float32", seed=None,
         weighting="uniform", meta_every=50, meta_steps=2, meta_momentum=0.9, meta_weight_decay=5e-4,
         meta_learning_rate=None, auxiliary=False, name="lmcl"):
    """Each network learns from the labels and from MCL's four contrastive terms between each of its layers and each
    layer of every other network, over one embedding head and one memory slot per (network, layer)
    (`keras_okd.knowledge.features.lmcl`, which lists where this departs from the authors' code), each pair of layers
    weighted by 1 (`weighting="uniform"`) or per sample by the paper's meta-optimised weight network (`"meta"`:
    trained every `meta_every` batches by a second-order look-ahead, see the part). With `auxiliary=True` every layer
    but the last grows an auxiliary branch (`keras_okd.models.auxiliary_branch`: new copies of the network's later
    layers and classifier) whose pooled features are contrasted in its place, and the branches' logits, an aggregator
    per network and the final logits' KL from the aggregated ones join the loss, as in the authors' code. The paper's
    method is `weighting="meta", auxiliary=True` (`configs/lmcl/cifar100_resnet32x2.yaml`); the defaults (`"uniform"`, no
    branches) stay what this preset built before those existed, so that the ledger's records rerun as they ran.

    Loss of network i: `CE_i + sum_{a in i} sum_{b not in i} (w(a, b) + w(b, a)) * (alpha VCL_a + gamma
    SoftVCL_{a<-b} + beta ICL_{a->b} + lambda SoftICL_{a->b})` (+ `A_i` of `auxiliary_classification` with the
    branches), with the defaults of the authors' CIFAR script
    (`main_layer_mcl_cifar_meta.py`: alpha = beta = 0.1, gamma = lambda = 1, tau = 0.1, T = 3, 128-d heads) and MCL's
    memory (momentum 0.5, 8192 keys per anchor). Training data must carry sample indices (`keras_okd.data.with_index`).
    The heads and the memory belong to the distiller; the exported students are the plain networks.

    Args:
        students: list of 2 or more `keras.Model`s producing logits over the same classes.
        num_train_samples: N, the training set's size (sizes the memory: N x students x layers x embedding_dim).
        alpha, beta, gamma, lam, tau, kd_temperature, embedding_dim, num_negatives, momentum, memory_dtype, seed: as
            `keras_okd.methods.mcl`'s (the same defaults), for every pair of layers; one head of `embedding_dim` and
            one memory slot per (network, layer).
        layers: the layers contrasted, the same number per network; default, for the zoo's models, every stage but
            the last and the pooled features (`("stage_1", "stage_2", "pool")` for a CIFAR ResNet).
        weighting, meta_every, meta_steps, meta_momentum, meta_weight_decay, meta_learning_rate: the pair weights
            and their meta step, as `LayerMutualContrastive`'s (the code's: every 50 batches, 2 look-ahead steps,
            momentum 0.9, weight decay 5e-4, the training's learning rate).
        auxiliary: grow the auxiliary branches and the aggregators (the students must be functional models with
            the layers named in `layers`; the last of them is the branches' pooled features, the classifier's input).
        name: model name.

    Returns:
        An `OnlineDistiller` with one `LayerMutualContrastive` part (`"lmcl"`).

    Raises:
        ValueError: a multi-branch student; `layers` not given for students without the zoo's layer names; with
            `auxiliary`, a layer a branch cannot grow on (`keras_okd.models.auxiliary_branch`).

    Example:

    ```python
    students = [keras_okd.models.get("wrn_16_2", num_classes=100) for _ in range(2)]
    # stage_1, stage_2 and pool of each network, each contrasted with the other network's three: 9 pairs of layers
    distiller = keras_okd.methods.lmcl(students, num_train_samples=50_000)
    # or two layers per network: 4 pairs, a memory of 50_000 x 2 x 2 x 128 floats
    distiller = keras_okd.methods.lmcl(students, num_train_samples=50_000, layers=("stage_2", "pool"))
    # the paper's method: auxiliary branches on stage_1 and stage_2 of each network (their pooled features are
    # contrasted, their logits aggregated) and meta-optimised weights of the 9 pairs (a look-ahead every 50 batches)
    distiller = keras_okd.methods.lmcl(students, num_train_samples=50_000, weighting="meta", auxiliary=True)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), coupled_weight_decay=5e-4)
    distiller.fit(keras_okd.data.with_index(train_ds).shuffle(50_000).batch(128), epochs=300)
    ```
    """
    independent_students(students, "lmcl")
    if layers is None:
        layers = _zoo_feature_layers(LayerMutualContrastive, students)
    if layers is None:
        raise ValueError("lmcl: the students do not have the zoo's layer names (stage_k, pool); name the layers "
                         "to contrast, the same number per student, e.g. layers=('block_2', 'block_4', 'flatten').")
    branches = None
    if auxiliary:
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        per_student = [layers[i] if isinstance(layers[0], (list, tuple)) else layers for i in range(len(students))]
        if any(len(names) < 2 for names in per_student):
            raise ValueError(f"lmcl: auxiliary branches grow on every contrasted layer but the last (the pooled "
                             f"features), so auxiliary=True needs two or more layers per student; got {layers!r}.")
        branches = [[auxiliary_branch(student, layer, features=names[-1], name=f"aux_{i}_{layer}")
                     for layer in names[:-1]] for i, (student, names) in enumerate(zip(students, per_student))]
    part = LayerMutualContrastive(num_train_samples, layers=layers, alpha=alpha, beta=beta, gamma=gamma, lam=lam,
                                  temperature=tau, kd_temperature=kd_temperature, embedding_dim=embedding_dim,
                                  num_negatives=num_negatives, momentum=momentum, memory_dtype=memory_dtype,
                                  seed=seed, weighting=weighting, meta_every=meta_every, meta_steps=meta_steps,
                                  meta_momentum=meta_momentum, meta_weight_decay=meta_weight_decay,
                                  meta_learning_rate=meta_learning_rate, auxiliary_branches=branches)
    return OnlineDistiller(students, knowledge=[part], name=name)
