"""Knowledge parts: each turns this step's peer outputs (and its own state) into soft targets for the peers."""

from keras_okd.knowledge.base import KnowledgePart, other_peers
from keras_okd.knowledge.ensemble_teacher import EnsembleTeacher, min_logit
from keras_okd.knowledge.features import (
    AttentionTransfer,
    ContrastiveRepresentation,
    FeatureDistillation,
    FitNet,
    NeuronSelectivityTransfer,
    ProbabilisticKT,
    RelationalKD,
    SimilarityPreserving,
)
from keras_okd.knowledge.heads import GateEnsemble, GateHead, PeerEnsemble, PeerEnsembleHead
from keras_okd.knowledge.mean_teacher import TeacherEnsemble, TeacherPeers
from keras_okd.knowledge.peer_distillation import PeerDistillation
from keras_okd.knowledge.spatial_integrator import SpatialIntegrator
from keras_okd.knowledge.temporal_accumulator import TemporalAccumulator

__all__ = [
    "AttentionTransfer",
    "ContrastiveRepresentation",
    "EnsembleTeacher",
    "FeatureDistillation",
    "FitNet",
    "GateEnsemble",
    "GateHead",
    "KnowledgePart",
    "NeuronSelectivityTransfer",
    "PeerDistillation",
    "PeerEnsemble",
    "PeerEnsembleHead",
    "ProbabilisticKT",
    "RelationalKD",
    "SimilarityPreserving",
    "SpatialIntegrator",
    "TeacherEnsemble",
    "TeacherPeers",
    "TemporalAccumulator",
    "min_logit",
    "other_peers",
]
