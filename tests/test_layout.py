"""The package's names mean one thing each: no function or class hides the module it is named after."""

import importlib
import pkgutil
import types

import keras_okd


def _modules():
    """Every module of keras_okd that imports on this backend (engine modules of other backends may not)."""
    found = []
    for info in pkgutil.walk_packages(keras_okd.__path__, "keras_okd."):
        try:
            found.append(importlib.import_module(info.name))
        except ImportError:
            continue
    return found


def test_no_name_shadows_its_module():
    modules = _modules()
    assert any(m.__name__ == "keras_okd.models.branches" for m in modules)
    shadowed = []
    for module in modules:
        parent_name, _, leaf = module.__name__.rpartition(".")
        value = getattr(importlib.import_module(parent_name), leaf, module)
        if not isinstance(value, types.ModuleType):
            shadowed.append(f"{module.__name__} is hidden by {parent_name}.{leaf} = {value!r}")
    assert not shadowed, "\n".join(shadowed)


def test_the_zoo_builders_are_the_package_names():
    import keras_okd.models._vgg as vgg_module

    assert keras_okd.models.vgg is vgg_module.vgg
