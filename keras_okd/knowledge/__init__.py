"""Knowledge parts: each turns this step's peer outputs (and its own state) into soft targets or a term per peer.

The contract is `keras_okd.knowledge.base` (`KnowledgePart`, `PartOutput`); a part owns its schedule
(`keras_okd.knowledge.schedules`: `WarmUp`, `RampUp`, `Decay`)."""

from keras_okd.knowledge.base import KnowledgePart, PartOutput, other_peers
from keras_okd.knowledge.consensus import PeerConsensus, leave_one_out_targets
from keras_okd.knowledge.diverse_peers import DiversePeers, okddip_losses, okddip_targets
from keras_okd.knowledge.ensemble_teacher import EnsembleTeacher, min_logit
from keras_okd.knowledge.features import (
    AttentionTransfer,
    ContrastiveRepresentation,
    FeatureDistillation,
    FitNet,
    LayerMutualContrastive,
    MutualContrastive,
    NeuronSelectivityTransfer,
    ProbabilisticKT,
    RelationalKD,
    SimilarityPreserving,
)
from keras_okd.knowledge.frozen_teacher import FrozenTeacher
from keras_okd.knowledge.trained_ensembles import GateEnsemble, GateHead, PeerEnsemble, PeerEnsembleHead
from keras_okd.knowledge.teacher_targets import TeacherEnsemble, TeacherPeers
from keras_okd.knowledge.peer_distillation import PeerDistillation
from keras_okd.knowledge.schedules import Decay, RampUp, Schedule, WarmUp
from keras_okd.knowledge.spatial_integrator import SpatialIntegrator
from keras_okd.knowledge.switchable import SwitchableDistillation
from keras_okd.knowledge.temporal_accumulator import TemporalAccumulator

__all__ = [
    "AttentionTransfer",
    "ContrastiveRepresentation",
    "Decay",
    "DiversePeers",
    "EnsembleTeacher",
    "FeatureDistillation",
    "FitNet",
    "FrozenTeacher",
    "GateEnsemble",
    "GateHead",
    "KnowledgePart",
    "LayerMutualContrastive",
    "MutualContrastive",
    "NeuronSelectivityTransfer",
    "PartOutput",
    "PeerConsensus",
    "PeerDistillation",
    "PeerEnsemble",
    "PeerEnsembleHead",
    "ProbabilisticKT",
    "RampUp",
    "RelationalKD",
    "Schedule",
    "SimilarityPreserving",
    "SpatialIntegrator",
    "SwitchableDistillation",
    "TeacherEnsemble",
    "TeacherPeers",
    "TemporalAccumulator",
    "WarmUp",
    "leave_one_out_targets",
    "min_logit",
    "okddip_losses",
    "okddip_targets",
    "other_peers",
]
