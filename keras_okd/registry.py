"""Named registries of methods, models and datasets, and the plugins that add to them.

`keras_okd.methods`, `keras_okd.models` and `keras_okd.data` each keep a `Registry` and expose its `register`,
`get`-style lookup and `names`. A new method (or model, or dataset) is one file that registers itself:

```python
# my_method.py
import keras_okd

@keras_okd.methods.register("my_method")
def my_method(students, temperature=2.0):
    return keras_okd.OnlineDistiller(students, [keras_okd.knowledge.PeerDistillation(temperature=temperature)])
```

From Python, import the file. From a YAML config, list it under `imports:` (a module name, or a `.py` path relative to
the config file) and name the method: `method: {name: my_method}`. The `keras-okd` CLI reads the same configs.
Installed packages can also declare the entry point group `keras_okd.plugins` (`[project.entry-points."keras_okd.plugins"]
my_method = "my_package.my_method"`): its modules are imported the first time a registry lists its names or is asked
for a name it does not know.
"""

import importlib
import importlib.util
import os
import sys
import warnings

ENTRY_POINT_GROUP = "keras_okd.plugins"
_entry_points_loaded = []


class Registry:
    """Names to objects, for one kind of thing ("method", "model", "dataset").

    Args:
        kind: what the registry holds, for messages.
        entries: initial `{name: object}`.

    Example:

    >>> shapes = Registry("shape", {"square": 4})
    >>> shapes.register("triangle", 3)
    3
    >>> shapes.get("triangle"), shapes.names()
    (3, ['square', 'triangle'])
    """

    def __init__(self, kind, entries=None):
        self.kind = kind
        self._entries = dict(entries or {})

    def register(self, name, obj=None, overwrite=False):
        """Register `obj` as `name`; without `obj`, a decorator. Returns `obj`.

        Raises:
            ValueError: `name` is taken (pass `overwrite=True` to replace it) or not a non-empty string.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"A {self.kind} name must be a non-empty string, got {name!r}.")

        def add(value):
            if name in self._entries and self._entries[name] is not value and not overwrite:
                raise ValueError(
                    f"A {self.kind} named {name!r} is already registered ({self._entries[name]!r}); choose another "
                    "name, or pass overwrite=True to replace it."
                )
            self._entries[name] = value
            return value

        return add if obj is None else add(obj)

    def get(self, name):
        """The object registered as `name`.

        Raises:
            ValueError: unknown name; the message lists the known ones and how to add one.
        """
        if name not in self._entries:
            load_entry_points()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"Unknown {self.kind} {name!r}; known: {', '.join(self.names())}. A new {self.kind} registers itself "
                f"with keras_okd's register (see keras_okd.registry); a config loads its file with `imports:`."
            ) from None

    def names(self):
        """The registered names (installed plugins' included: see `load_entry_points`), sorted."""
        load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name):
        if name not in self._entries:
            load_entry_points()
        return name in self._entries


class PluginError(ImportError):
    """A plugin that cannot be loaded: not found, or its code raised an error while being imported (the message
    names the plugin, the error and the plugin's line that raised it; the original error is `__cause__`).
    `missing` is True when the plugin itself was not found.

    A subclass of `ImportError`, raised by `load_plugin`; a config's `imports:` reports it as a `ConfigError` with
    the key's line, and the CLI's `--import` shows its message and exits with status 2.

    Args:
        message: what went wrong, naming the plugin.
        missing: whether the plugin itself was not found (rather than failing while being imported).

    Example:

    >>> from keras_okd.registry import PluginError, load_plugin
    >>> try:
    ...     load_plugin("no_such_plugin_module")
    ... except PluginError as error:
    ...     print(error.missing, error)
    True Plugin module 'no_such_plugin_module' cannot be imported: No module named 'no_such_plugin_module'.
    """

    def __init__(self, message, missing=False):
        super().__init__(message)
        self.missing = missing


def load_plugin(spec, base_dir=None):
    """Import a plugin: a module name (`"my_package.my_method"`) or the path of a `.py` file (relative paths are taken
    from `base_dir`, e.g. the config file's folder; default the current folder). Importing it runs its `register`
    calls. A file is imported once per process (as module `keras_okd_plugin_<file name>`); loading it again returns
    the same module.

    Returns:
        The imported module.

    Raises:
        PluginError: the module or file cannot be found, or raised an error while importing (the message names the
            plugin, the error and the line of the plugin that raised it).

    Example:

    ```python
    module = keras_okd.registry.load_plugin("examples/new_method.py")
    keras_okd.methods.get("confident_peer")
    ```
    """
    if not isinstance(spec, str) or not spec.strip():
        raise PluginError(f"A plugin is a .py file or a module name, got {spec!r}.")
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        path = spec if os.path.isabs(spec) or base_dir is None else os.path.join(base_dir, spec)
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise PluginError(f"Plugin file {spec!r} not found (looked for {path}).", missing=True)
        name = "keras_okd_plugin_" + os.path.splitext(os.path.basename(path))[0]
        if name in sys.modules and getattr(sys.modules[name], "__file__", None) == path:
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        what = f"Plugin file {spec!r}" + ("" if spec == path else f" ({path})")
        try:
            module_spec.loader.exec_module(module)
        except (Exception, SystemExit) as error:  # any error of the plugin's own code (or its exit): named
            del sys.modules[name]
            raise PluginError(_raised(what, path, error)) from error
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as error:
        if error.name is not None and spec.startswith(error.name):  # the plugin itself (or its package) is missing
            raise PluginError(f"Plugin module {spec!r} cannot be imported: {error}.", missing=True) from error
        raise PluginError(_raised(f"Plugin module {spec!r}", None, error)) from error
    except (Exception, SystemExit) as error:
        raise PluginError(_raised(f"Plugin module {spec!r}", None, error)) from error


def _raised(what, path, error):
    """`"<what> raised <Error> at line N of <file> while being imported: <message>"` (a `SystemExit`: `called
    sys.exit(code) at line N ...`, since a plugin must not end the process that imports it)."""
    import traceback

    where = ""
    if isinstance(error, SyntaxError) and error.lineno:
        where = f" at line {error.lineno} of {error.filename or path}"
    else:
        frames = traceback.extract_tb(error.__traceback__)
        own = [f for f in frames if path is None or os.path.abspath(f.filename) == path]
        own = [f for f in own if "importlib" not in f.filename]
        if own:
            where = f" at line {own[-1].lineno} of {own[-1].filename}"
    if isinstance(error, SystemExit):
        return (f"{what} called sys.exit({error.code!r}){where} while being imported: a plugin registers methods, "
                "models or datasets and must not end the process; nothing was trained")
    return f"{what} raised {type(error).__name__}{where} while being imported: {' '.join(str(error).split())}"


def load_entry_points():
    """Import every module of the `keras_okd.plugins` entry point group, once per process (registries call this
    before they list their names or look up one they do not know). An entry point that does not load is reported
    with a `UserWarning` naming it and its error (a broken installed package must not stop unrelated runs); the
    others are loaded.

    An installed package declares its plugin modules in its `pyproject.toml`:

    ```toml
    [project.entry-points."keras_okd.plugins"]
    my_method = "my_package.my_method"
    ```

    Example:

    ```python
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keras_okd.registry.load_entry_points()   # imports them on the first call in a process (the first
                                                 # registry listing does the same); later calls do nothing
    for warning in caught:                       # a broken plugin: fix or uninstall the package it names
        print(warning.message)
    "my_method" in keras_okd.methods.names()
    ```
    """
    if _entry_points_loaded:
        return
    _entry_points_loaded.append(True)
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except (Exception, SystemExit) as error:  # one broken installed plugin: say which, load the others
            warnings.warn(_raised(f"keras_okd plugin entry point {entry.name} = {entry.value!r}", None, error)
                          + "; its methods, models and datasets are not registered.", stacklevel=2)
