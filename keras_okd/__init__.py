"""keras-okd: online knowledge distillation for Keras 3 (TensorFlow, JAX, PyTorch)."""

from keras_okd import callbacks, data, distribute, knowledge, losses, methods, models
from keras_okd.distiller import OnlineDistiller

__version__ = "0.1.0"

__all__ = ["OnlineDistiller", "callbacks", "data", "distribute", "knowledge", "losses", "methods", "models", "__version__"]
