"""keras-okd: online knowledge distillation for Keras 3 (TensorFlow, JAX, PyTorch).

The package's names (`OnlineDistiller`, `methods`, `knowledge`, `models`, `data`, `experiments`, ...) are imported on
first use, so that `import keras_okd` loads no engine: the `keras-okd` command answers `--help`, `methods` and
argument errors without importing Keras, and `keras_okd.data` alone brings TensorFlow. When Keras is imported before
keras_okd, the distiller, its parts and the zoo are imported at once, so that `keras.saving.load_model` finds their
serialisable classes; otherwise they are imported the first time a name of the package is used.

Example:

>>> import keras_okd
>>> keras_okd.OnlineDistiller is keras_okd.distiller.OnlineDistiller
True
"""

import importlib
import importlib.util
import sys

__version__ = "0.1.0"

# What `keras.saving.load_model` must find registered: the distiller, the parts, their schedules, the zoo's layers.
_SERIALISABLE = ("distiller", "callbacks", "knowledge", "models")


def __getattr__(name):
    if name == "OnlineDistiller":
        return importlib.import_module("keras_okd.distiller").OnlineDistiller
    if not name.startswith("_") and importlib.util.find_spec(f"keras_okd.{name}") is not None:  # a submodule
        return importlib.import_module(f"keras_okd.{name}")
    raise AttributeError(f"module 'keras_okd' has no attribute {name!r}")


if "keras" in sys.modules:  # the engine is loaded already: register the serialisable classes now
    for _name in _SERIALISABLE:
        importlib.import_module(f"keras_okd.{_name}")

__all__ = ["OnlineDistiller", "callbacks", "data", "distribute", "experiments", "knowledge", "losses", "methods",
           "models", "registry", "__version__"]
