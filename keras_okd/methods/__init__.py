"""Method presets: each returns an `OnlineDistiller` with its paper's parts and defaults.

`get(name)` returns a preset function by name, `names()` lists them, `register(name)` adds one (used by configs and
the CLI; see `keras_okd.registry` for a method in a file of your own).

A built-in preset registers itself as a plugin does: one public module of this package, whose preset function is
decorated with `@register("name")`. Importing this package imports each of them (every module whose name does not
start with `_`), so a new built-in method is one new file here.
"""

import importlib
import pkgutil

from keras_okd.registry import Registry

_METHODS = Registry("method")


def names():
    """Sorted names of the method presets (those registered by `register`, plugins' included).

    Returns:
        A sorted list of strings, each accepted by `get` and by a config's `method: {name: ...}`.

    Example:

    >>> import keras_okd
    >>> {"dml", "dkel", "kdcl", "one", "pcl", "tsb"} <= set(keras_okd.methods.names())
    True
    """
    return _METHODS.names()


def get(name):
    """The preset function called `name` (e.g. `get("tsb")(students, num_train_samples=50_000)`).

    Args:
        name: a name from `names()`.

    Returns:
        The preset function, `preset(students, **params) -> OnlineDistiller`.

    Raises:
        ValueError: unknown name; the message lists the known ones (check the spelling, or `register` the method).

    Example:

    >>> import keras_okd
    >>> keras_okd.methods.get("dml") is keras_okd.methods.dml
    True

    ```python
    students = [keras_okd.models.get("simple_cnn", num_classes=10) for _ in range(2)]
    distiller = keras_okd.methods.get("dml")(students, temperature=3.0)
    keras_okd.methods.get("tbs")   # ValueError: Unknown method 'tbs'; known: cl, dkel, dml, ...
    ```
    """
    return _METHODS.get(name)


def register(name, preset=None, overwrite=False):
    """Register a preset (a function `preset(students, **params) -> OnlineDistiller`) as `name`, for configs
    (`method: {name: ..., params: {...}}`) and the CLI. Usable as a decorator. A preset that takes
    `num_train_samples` gets the training set's size from the experiment runner.

    Example:

    ```python
    @keras_okd.methods.register("dml_t4")
    def dml_t4(students):
        return keras_okd.methods.dml(students, temperature=4.0, name="dml_t4")
    ```
    """
    return _METHODS.register(name, preset, overwrite=overwrite)


# Every public module of this package holds a built-in preset, registered with `@register(name)` as it is imported.
for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
_BUILTIN = dict(_METHODS._entries)
globals().update(_BUILTIN)  # keras_okd.methods.dml, .tsb, ...: the presets by their names

__all__ = ["get", "names", "register", *sorted(_BUILTIN)]
