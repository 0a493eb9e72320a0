"""Every public class and function of keras_okd has a docstring with an example (issue 13), and the cheap examples run.

Public names are a module's `__all__`, or, for a module without one, the classes and functions it defines whose
names do not start with an underscore. Only names are imported (no model is built), so this runs on every backend.
"""

import doctest
import importlib
import inspect

import pytest

MODULES = (
    "keras_okd",
    "keras_okd.methods",
    "keras_okd.knowledge",
    "keras_okd.knowledge.features",
    "keras_okd.models",
    "keras_okd.data",
    "keras_okd.callbacks",
    "keras_okd.experiments",
    "keras_okd.distribute",
    "keras_okd.losses",
    "keras_okd.registry",
    "keras_okd.metrics",
)

# Modules whose `>>>` examples are cheap (no dataset, no model build beyond a part): run on every backend.
DOCTEST_MODULES = (
    "keras_okd.callbacks",
    "keras_okd.data.idx",
    "keras_okd.distribute",
    "keras_okd.knowledge.base",
    "keras_okd.knowledge.diverse_peers",
    "keras_okd.knowledge.ensemble_teacher",
    "keras_okd.knowledge.features.base",
    "keras_okd.losses",
    "keras_okd.methods",
    "keras_okd.registry",
)


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
        "in the house style, see keras_okd/distiller.py):\n  " + "\n  ".join(missing)
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


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_cheap_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=False)
    assert result.attempted > 0, f"{module_name}: no `>>>` example found"
    assert result.failed == 0, (f"{module_name}: {result.failed} of {result.attempted} doctest examples failed; "
                                "doctest printed each one, expected and got, in the captured stdout")
