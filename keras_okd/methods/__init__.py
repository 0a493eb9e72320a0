"""Method presets: each returns an `OnlineDistiller` with its paper's parts and defaults."""

from keras_okd.methods.dml import dml
from keras_okd.methods.independent import independent
from keras_okd.methods.tsb import tsb

__all__ = ["dml", "independent", "tsb"]
