"""Feature-level knowledge: the classic feature-KD methods of TSB Table 4, made online.

Each part reads named intermediate layers of every peer (`layers=`; the zoo names its stage outputs `stage_k` and
its pooled features `pool`), and gives each peer the classic student-teacher loss with every other peer as the
(detached) teacher, averaged over the other peers. One file per method: its pure loss function(s) with the paper's
equation, then the part.

| part | paper | reads (zoo default) | weight default |
|---|---|---|---|
| `FitNet` | Romero et al., ICLR 2015 | `stage_2`, through a trainable regressor per ordered pair | 100 |
| `AttentionTransfer` | Zagoruyko and Komodakis, ICLR 2017 | `stage_1..3` attention maps | 1000 |
| `SimilarityPreserving` | Tung and Mori, ICCV 2019 | `stage_3` batch similarity | 3000 |
| `RelationalKD` | Park et al., CVPR 2019 | `pool` distances (x25) and angles (x50) | 1 |
| `ProbabilisticKT` | Passalis and Tefas, ECCV 2018 | `pool` cosine-kernel probabilities | 30000 |
| `NeuronSelectivityTransfer` | Huang and Wang, 2017 | `stage_1..3` polynomial MMD | 50 |
| `ContrastiveRepresentation` | Tian et al., ICLR 2020 | `pool`, embedding heads + per-sample memory | 0.8 |

The layers and weights left open by the papers are those of CRD's benchmark code (RepDistiller), which implements
all seven methods for CIFAR-100. `feature_part(name, ...)` builds one by its short name (`METHODS`).
"""

from keras_okd.knowledge.features.at import AttentionTransfer
from keras_okd.knowledge.features.base import FeatureDistillation
from keras_okd.knowledge.features.crd import ContrastiveRepresentation
from keras_okd.knowledge.features.fitnet import FitNet
from keras_okd.knowledge.features.lmcl import LayerMutualContrastive
from keras_okd.knowledge.features.mcl import MutualContrastive
from keras_okd.knowledge.features.nst import NeuronSelectivityTransfer
from keras_okd.knowledge.features.pkt import ProbabilisticKT
from keras_okd.knowledge.features.rkd import RelationalKD
from keras_okd.knowledge.features.sp import SimilarityPreserving

METHODS = {  # in TSB Table 4's order
    "fitnet": FitNet,
    "at": AttentionTransfer,
    "crd": ContrastiveRepresentation,
    "nst": NeuronSelectivityTransfer,
    "sp": SimilarityPreserving,
    "rkd": RelationalKD,
    "pkt": ProbabilisticKT,
}


def feature_part(name, num_train_samples=None, **params):
    """The feature part called `name` (a key of `METHODS`: "fitnet", "at", "sp", "rkd", "pkt", "nst", "crd") with
    its defaults, overridden by `params`.

    Args:
        name: the method's short name (case-insensitive).
        num_train_samples: the training set's size; CRD's memory needs it (ignored by the others).
        **params: the part's own arguments (`layers`, `weight`, ...).

    Example:

    >>> feature_part("at", weight=500.0).weight
    500.0
    """
    key = str(name).lower()
    if key not in METHODS:
        raise ValueError(f"Unknown feature-distillation method {name!r}; known: {', '.join(METHODS)}.")
    cls = METHODS[key]
    if cls is ContrastiveRepresentation and "num_samples" not in params:
        if num_train_samples is None:
            raise ValueError(
                "The CRD part keeps a memory of every training sample's embedding: give the training set's size, "
                "num_train_samples=... (the experiment runner passes it to presets that take it)."
            )
        params["num_samples"] = int(num_train_samples)
    return cls(**params)


__all__ = [
    "METHODS",
    "AttentionTransfer",
    "ContrastiveRepresentation",
    "FeatureDistillation",
    "FitNet",
    "LayerMutualContrastive",
    "MutualContrastive",
    "NeuronSelectivityTransfer",
    "ProbabilisticKT",
    "RelationalKD",
    "SimilarityPreserving",
    "feature_part",
]
