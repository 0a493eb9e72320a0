"""MCL: Mutual Contrastive Learning for Visual Representation Learning (Chuanguang Yang, Zhulin An, Linhang Cai and
Yongjun Xu, AAAI 2022; code: github.com/winycg/MCL)."""

from keras_okd.distiller import OnlineDistiller
from keras_okd.knowledge.features.mcl import MutualContrastive
from keras_okd.methods import register
from keras_okd.methods._checks import independent_students
from keras_okd.methods.mutual_learning import _zoo_feature_layers


@register("mcl")
def mcl(students, num_train_samples, alpha=0.1, beta=0.1, gamma=1.0, lam=1.0, tau=0.1, kd_temperature=3.0,
        embedding_dim=128, num_negatives=8192, momentum=0.5, layers=None, memory_dtype="float32", seed=None,
        name="mcl"):
    """Each network learns from the labels and from four contrastive terms over embedding heads and a per-sample
    memory of every network's embeddings (`keras_okd.knowledge.features.mcl`, which lists where the authors' code
    departs from it).

    Loss of network a: `CE_a + alpha VCL^a + gamma sum_{b != a} SoftVCL^{a<-b} + beta sum_{b != a} ICL^{a->b} +
    lambda sum_{b != a} SoftICL^{a->b}`, with the defaults of the authors' CIFAR scripts (alpha = beta = 0.1,
    gamma = lambda = 1, tau = 0.1, T = 3, 128-d heads) and the memory of their ImageNet code (momentum 0.5, 8192 keys
    per anchor). Training data must carry sample indices (`keras_okd.data.with_index`). The heads and the memory
    belong to the distiller; the exported students are the plain networks.

    Args:
        students: list of 2 or more `keras.Model`s producing logits over the same classes.
        num_train_samples: N, the training set's size (sizes the memory: N x students x embedding_dim floats).
        alpha, beta, gamma, lam: the weights of VCL, ICL, soft VCL and soft ICL.
        tau: the contrastive temperature.
        kd_temperature: T of the soft terms.
        embedding_dim: d of the embedding heads.
        num_negatives: keys drawn from the memory per anchor.
        momentum: the memory's momentum.
        layers: the representation each network embeds; default its pooled features (`"pool"` in the zoo's models).
        memory_dtype: `"float32"`, or `"float16"` / `"bfloat16"` to halve the memory.
        seed: seed of the keys' generator (None: from Keras's global seed).
        name: model name.

    Returns:
        An `OnlineDistiller` with one `MutualContrastive` part (`"mcl"`).

    Example:

    ```python
    students = [keras_okd.models.get("resnet32", num_classes=100) for _ in range(4)]
    distiller = keras_okd.methods.mcl(students, num_train_samples=50_000)   # each network contrasts with 3 others
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), coupled_weight_decay=5e-4)
    distiller.fit(keras_okd.data.with_index(train_ds).shuffle(50_000).batch(128), epochs=300)
    ```
    """
    independent_students(students, "mcl")
    if layers is None:
        layers = _zoo_feature_layers(MutualContrastive, students) or ("pool",)
    part = MutualContrastive(num_train_samples, layers=layers, alpha=alpha, beta=beta, gamma=gamma, lam=lam,
                             temperature=tau, kd_temperature=kd_temperature, embedding_dim=embedding_dim,
                             num_negatives=num_negatives, momentum=momentum, memory_dtype=memory_dtype, seed=seed)
    return OnlineDistiller(students, knowledge=[part], name=name)
