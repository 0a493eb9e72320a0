"""The distiller: one `keras.Model` that trains a group of peers together, and what it needs around the loss.

Read it top-down, one file a concern:

- `model`: `OnlineDistiller` (also `keras_okd.OnlineDistiller`): `call` runs the peers (and the teacher),
  `compute_loss` adds the cross-entropies and the knowledge parts' terms; `fit`, `evaluate`, `predict`, the exports
  and the serialisation.
- `peers`: which networks are taught (M students, or the branches of one multi-branch student), each peer's view of
  the batch, the forward pass, the feature taps, the plain-Keras exports.
- `inputs`: what data is accepted, and the checks that refuse bad data before any state changes.
- `teacher`: the mean teacher (an EMA of the students) and DKEL's decoupled initialisation.
- `safety`: a non-finite step changes nothing; a failed call leaves the model usable.
- `logs`: what `fit` and `evaluate` log for every peer.
- `callbacks`: what `fit` adds: `KnowledgeSchedule` (advances the parts' schedules), `PeerCollapse` (the collapse
  monitor) and the short progress bar (also `keras_okd.callbacks`).

What the peers learn from lives outside, in `keras_okd.knowledge` (the parts, their contract in
`keras_okd.knowledge.base`, their schedules in `keras_okd.knowledge.schedules`); `keras_okd.methods` composes parts
into the papers' presets.

Example:

>>> import keras_okd
>>> keras_okd.distiller.OnlineDistiller is keras_okd.OnlineDistiller
True
"""

from keras_okd.distiller.model import OnlineDistiller

__all__ = ["OnlineDistiller"]
