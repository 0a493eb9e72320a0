"""Method presets: each returns an `OnlineDistiller` with its paper's parts and defaults.

`get(name)` returns a preset function by name, `names()` lists them (used by configs and the CLI).
"""

from keras_okd.methods.cl import cl
from keras_okd.methods.dkel import dkel
from keras_okd.methods.dml import dml
from keras_okd.methods.independent import independent
from keras_okd.methods.knowledge_distillation import kd
from keras_okd.methods.kdcl import kdcl
from keras_okd.methods.okddip import okddip
from keras_okd.methods.one import one
from keras_okd.methods.pcl import pcl
from keras_okd.methods.tsb import tsb

_PRESETS = {"independent": independent, "dml": dml, "tsb": tsb, "kdcl": kdcl, "one": one, "pcl": pcl, "dkel": dkel,
            "cl": cl, "okddip": okddip, "kd": kd}


def names():
    """Sorted names of the method presets."""
    return sorted(_PRESETS)


def get(name):
    """The preset function called `name` (e.g. `get("tsb")(students, num_train_samples=50_000)`).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    try:
        return _PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}; known methods: {', '.join(names())}.") from None


__all__ = ["cl", "dkel", "dml", "get", "independent", "kd", "kdcl", "names", "okddip", "one", "pcl", "tsb"]
