"""Knowledge parts: each turns this step's peer outputs (and its own state) into soft targets for the peers."""

from keras_okd.knowledge.base import KnowledgePart, other_peers
from keras_okd.knowledge.peer_distillation import PeerDistillation
from keras_okd.knowledge.spatial_integrator import SpatialIntegrator
from keras_okd.knowledge.temporal_accumulator import TemporalAccumulator

__all__ = ["KnowledgePart", "PeerDistillation", "SpatialIntegrator", "TemporalAccumulator", "other_peers"]
