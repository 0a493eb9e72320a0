"""Built-in presets register themselves as plugins do: one module of keras_okd/methods, one `@register(name)`."""

import ast
import pathlib

import keras_okd
import keras_okd.methods

METHODS_DIR = pathlib.Path(keras_okd.methods.__file__).parent


def registered_in(path):
    """The names a module's `@register("name")` decorators give (read from its source)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        for decorator in getattr(node, "decorator_list", ()):
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "register":
                found.append(decorator.args[0].value)
    return found


def test_every_public_module_of_methods_registers_its_preset_and_nothing_else_does():
    modules = sorted(p for p in METHODS_DIR.glob("*.py") if not p.name.startswith("_"))
    by_module = {p.stem: registered_in(p) for p in modules}
    assert all(by_module.values()), f"modules that register no preset: {[m for m, n in by_module.items() if not n]}"
    names = sorted(name for found in by_module.values() for name in found)
    builtin = {name: preset for name, preset in keras_okd.methods._BUILTIN.items()}
    assert sorted(builtin) == names
    for module, found in by_module.items():
        for name in found:
            preset = keras_okd.methods.get(name)
            assert preset.__module__ == f"keras_okd.methods.{module}"
            assert getattr(keras_okd.methods, name) is preset and name in keras_okd.methods.__all__


def test_the_papers_presets_are_all_registered():
    assert {"cl", "dkel", "dml", "independent", "kd", "kdcl", "okddip", "one", "pcl", "tsb"} <= set(
        keras_okd.methods.names())
