"""keras-okd: online knowledge distillation for Keras 3 (TensorFlow, JAX, PyTorch).

The layers of the design, top down: `methods` (the papers' presets) compose `knowledge` parts (what the peers learn
from, with their schedules) into a `distiller` (`OnlineDistiller` and what runs around its loss: peers, inputs, mean
teacher, safety, logs, callbacks); `losses` holds the KD terms, `models` the zoo, `data` the datasets;
`experiments` and `cli` run configs; `backend` holds the only engine-specific code. `registry` and `distribute` serve
them all (named registries and plugins; strategies over several devices).

The package's names are imported on first use, so that `import keras_okd` loads no engine: the `keras-okd` command
answers `--help`, `methods` and argument errors without importing Keras, and `keras_okd.data` alone brings
TensorFlow. When Keras is imported before keras_okd, the distiller, its parts and the zoo are imported at once, so
that `keras.saving.load_model` finds their serialisable classes; otherwise they are imported the first time a name of
the package is used. `keras_okd.callbacks` is the distiller's callbacks module, `keras_okd.distiller.callbacks`.

Example:

>>> import keras_okd
>>> keras_okd.OnlineDistiller is keras_okd.distiller.OnlineDistiller
True
>>> keras_okd.callbacks is keras_okd.distiller.callbacks
True
"""

import importlib
import importlib.util
import sys

__version__ = "0.1.0"

# What `keras.saving.load_model` must find registered: the distiller, the parts and their schedules, the zoo's layers.
_SERIALISABLE = ("distiller", "knowledge", "models")


def __getattr__(name):
    if name == "OnlineDistiller":
        return importlib.import_module("keras_okd.distiller").OnlineDistiller
    if name == "callbacks":  # where users reach the distiller's callbacks
        return importlib.import_module("keras_okd.distiller.callbacks")
    if not name.startswith("_") and importlib.util.find_spec(f"keras_okd.{name}") is not None:  # a submodule
        return importlib.import_module(f"keras_okd.{name}")
    raise AttributeError(f"module 'keras_okd' has no attribute {name!r}")


if "keras" in sys.modules:  # the engine is loaded already: register the serialisable classes now
    for _name in _SERIALISABLE:
        importlib.import_module(f"keras_okd.{_name}")

__all__ = ["OnlineDistiller", "callbacks", "data", "distiller", "distribute", "experiments", "knowledge", "losses",
           "methods", "models", "registry", "__version__"]
