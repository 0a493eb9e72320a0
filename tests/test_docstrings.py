"""Every public class and function of keras_okd has a docstring with an example (issue 13), and the cheap examples run.

Public names are a module's `__all__`, or, for a module without one, the classes and functions it defines whose
names do not start with an underscore. The `>>>` examples of every module outside the model zoo run as doctests
(tiny arrays, no training), so an example that goes stale fails here, on every backend.
"""

import doctest
import importlib
import inspect
import pathlib

import pytest

import keras_okd

MODULES = (
    "keras_okd",
    "keras_okd.methods",
    "keras_okd.knowledge",
    "keras_okd.knowledge.features",
    "keras_okd.models",
    "keras_okd.data",
    "keras_okd.distiller",
    "keras_okd.distiller.callbacks",
    "keras_okd.experiments",
    "keras_okd.distribute",
    "keras_okd.losses",
    "keras_okd.registry",
)

# Model builds make the zoo's examples slow (seconds to tens of seconds each); every other module's `>>>` examples
# are cheap (tiny arrays, a knowledge part, a config check) and run on every backend.
SLOW_DOCTEST_PACKAGES = ("keras_okd.models",)
PACKAGE_DIR = pathlib.Path(keras_okd.__file__).parent


def doctest_modules():
    """Modules of keras_okd whose source has `>>>` examples, outside `SLOW_DOCTEST_PACKAGES`."""
    found = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if ">>>" in path.read_text() and not name.startswith(SLOW_DOCTEST_PACKAGES):
            found.append(name)
    return found


def public_names(module):
    """`__all__`, else the classes and functions `module` defines with names not starting with `_`."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return sorted(
        name for name, obj in vars(module).items()
        if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == module.__name__
    )


def lacks_example(obj):
    """Why `obj` fails the rule ("no docstring", "no example"), or None when its docstring has an example."""
    doc = inspect.getdoc(obj)
    if not doc:
        return "no docstring"
    if "Example" not in doc and ">>>" not in doc:
        return "no example"
    return None


def offenders(module_names):
    """`["module.name (why)", ...]` for every public class or function without a docstring example."""
    found = []
    for module_name in module_names:
        module = importlib.import_module(module_name)
        for name in public_names(module):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isroutine(obj)):
                continue  # constants (e.g. keras_okd.__version__) carry no docstring of their own
            why = lacks_example(obj)
            if why:
                found.append(f"{module_name}.{name} ({why})")
    return found


@pytest.mark.parametrize("module_name", MODULES)
def test_module_has_public_callables(module_name):
    """The walk finds something to check in every module (an empty walk would pass the rule vacuously)."""
    module = importlib.import_module(module_name)
    callables = [n for n in public_names(module)
                 if inspect.isclass(getattr(module, n)) or inspect.isroutine(getattr(module, n))]
    assert callables, f"{module_name}: no public class or function found"


def test_every_public_name_has_a_docstring_example():
    missing = offenders(MODULES)
    assert not missing, (
        f"{len(missing)} public name(s) without a docstring that has an `Example:` section or `>>>` lines (add one "
        "in the house style, see keras_okd/distiller/model.py):\n  " + "\n  ".join(missing)
    )


def test_checker_flags_missing_docstrings_and_examples(tmp_path, monkeypatch):
    """The rule itself: a module with an undocumented function and a docstring without example is reported."""
    (tmp_path / "docs_probe.py").write_text(
        'def bare():\n    pass\n\n\n'
        'def no_example():\n    """Does a thing."""\n\n\n'
        'def documented():\n    """Does a thing.\n\n    Example:\n\n    >>> documented()\n    """\n\n\n'
        'class _Private:\n    pass\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert offenders(["docs_probe"]) == ["docs_probe.bare (no docstring)", "docs_probe.no_example (no example)"]


def test_doctest_modules_found():
    found = doctest_modules()
    assert {"keras_okd.losses", "keras_okd.distiller.callbacks", "keras_okd.data.idx"} <= set(found), found
    assert not any(name.startswith("keras_okd.models") for name in found), found


@pytest.mark.parametrize("module_name", doctest_modules())
def test_cheap_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=False)
    assert result.attempted > 0, f"{module_name}: no `>>>` example found"
    assert result.failed == 0, (f"{module_name}: {result.failed} of {result.attempted} doctest examples failed; "
                                "doctest printed each one, expected and got, in the captured stdout")
