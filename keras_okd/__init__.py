"""keras-okd: online knowledge distillation for Keras 3 (TensorFlow, JAX, PyTorch).

`keras_okd.data` (tf.data input pipelines and datasets) and `keras_okd.experiments` (configs, runner, reports) are
imported on first use: the distiller, the methods, the knowledge parts and the zoo need no TensorFlow, so with the JAX
or torch backend `import keras_okd` does not load it until data pipelines are asked for.
"""

import importlib

from keras_okd import callbacks, distribute, knowledge, losses, methods, models, registry
from keras_okd.distiller import OnlineDistiller

__version__ = "0.1.0"

_LAZY = ("data", "experiments")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"keras_okd.{name}")
    raise AttributeError(f"module 'keras_okd' has no attribute {name!r}")


__all__ = ["OnlineDistiller", "callbacks", "data", "distribute", "experiments", "knowledge", "losses", "methods",
           "models", "registry", "__version__"]
