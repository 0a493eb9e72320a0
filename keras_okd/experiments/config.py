"""Experiment configs: YAML files that describe one training recipe, checked before anything trains.

Schema (every key of every section is checked; unknown keys and wrong types are errors that name the key and the
file and line, or the `--set` override, they came from):

```yaml
experiment: tsb_table1_cifar100_resnet32   # required; names the run directory (runs/<experiment>/<method>/seed_<s>)
                                           #   and groups reports; letters, digits, _ . + -
paper: "TSB Table 1"                       # free text (default ""); the report's section heading
imports: [my_method.py]                    # plugins (default []): .py files (relative to this config's folder;
                                           #   relative to the current folder when given with --set) or module
                                           #   names, imported (keras_okd.registry.load_plugin) before any name below
                                           #   is checked, so the methods, models and datasets they register can be
                                           #   named; the resolved config holds absolute paths
method:                                    # required
  name: tsb                                # one of keras_okd.methods.names()
  params: {beta: 0.8}                      # the preset's keyword arguments (checked against its signature; the
                                           #   students, num_train_samples and name arguments are set by the runner);
                                           #   `views` (PCL, DKEL, KDCL: each peer its own augmented view, made in the
                                           #   step by keras_okd.data.peer_views): null, standard (shift by up to 4
                                           #   pixels + flip) or crop (shift only); use with dataset.augment: null
students: [resnet32, resnet32]             # required: 2 or more zoo names (keras_okd.models.names()), OR one
                                           #   multi-branch student for the branch methods (ONE, PCL, DKEL):
# students: {model: resnet32, branches: 3, per_branch_inputs: null}
                                           #   branches default 3; per_branch_inputs (one input per branch,
                                           #   keras_okd.models.multi_branch) default: true when the method has views
dataset:                                   # required
  name: cifar100                           # one of keras_okd.data.names()
  batch_size: 64                           # ... and any option of that dataset's loader (keras_okd.data.loader(name)):
  data_dir: null                           #   data_dir, augment, shuffle, ...; `seed` is the run's seed
  augment: standard
optimizer:                                 # required
  name: sgd                                # a Keras optimizer name (sgd, adam, adamw, rmsprop, ...)
  learning_rate: 0.05                      # ... and its constructor's arguments; learning_rate is the base rate of
  momentum: 0.9                            #   the schedule
  nesterov: false
  weight_decay: 5.0e-4                     # PyTorch-style (coupled) decay: OnlineDistiller.compile(coupled_weight_decay=)
schedule: {type: step, milestones: [150, 180, 210], factor: 0.1}   # or {type: cosine}, or {type: constant} (the
                                           #   default); each takes warmup_epochs (default 0): a linear learning-
                                           #   rate warm-up over that many epochs, per step
                                           #   (keras_okd.experiments.schedules)
epochs: 240                                # required, >= 1
validation_freq: 1                         # validate on the test split every that many epochs (default 1); must
                                           #   divide epochs, so the last epoch is always scored
seeds: [0]                                 # default [0]; one run (one sub-directory) per seed
strategy: none                             # none | mirrored | multi_worker (tensorflow) | jax_data_parallel (jax)
```

Resolution: `load_config` reads the file, applies `--set key.sub=value` overrides (the value is parsed as YAML, so
`--set method.params.beta=0.5`, `--set students=[resnet20,resnet32]` and
`--set 'students={model: resnet32, branches: 3}'` work; list items are addressed by position, `students.1=wrn_16_4`),
checks everything, and returns a plain dict with every default filled in (the method's and the dataset loader's
defaults included), which the runner saves as the run's `config.yaml`.

Numbers: PyYAML alone reads `5e-4` as a string; the loader here reads it as a float like `5.0e-4`.

Values: every number is checked against its accepted range where a range is known (dataset options such as
`batch_size >= 1` and `validation_split` in (0, 1), optimizer arguments such as `learning_rate > 0` and `momentum` in
[0, 1), seeds in [0, 2**32 - 1]; no NaN or infinity anywhere), and the method's params are tried on the preset itself
(a throw-away distiller of tiny students), so that its own checks (`beta` in (0, 1), `temperature > 0`,
`warmup_epochs >= 0`, `bank_dtype` a float dtype, ...) report here, with the key's line. A method name that is not
among `keras_okd.methods.names()` is an error. What can only be checked with the data (a dataset option its loader
refuses, a network too deep for the images, an empty dataset, a strategy this backend lacks) is checked by the
runner before anything is written, and reported as a `ConfigError` naming the key's line too.

The checks are tables: `TOP` (the config's keys), `SCHEDULE` and `STEP_SCHEDULE`, `BRANCH_STUDENT`, `METHOD`, and
the ranges of the dataset options and optimizer arguments (`DATASET_RANGES`, `OPTIMIZER_RANGES`); a row gives a key's
types, default, rules and hint (`_Key`), so a new key is a new row.
"""

import collections
import copy
import difflib
import functools
import importlib
import inspect
import json
import math
import os
import re
import types
import typing
import warnings

import yaml

from keras_okd.distribute import STRATEGIES, STRATEGY_ENGINES
from keras_okd.registry import PluginError, load_plugin

SCHEDULES = ("step", "cosine", "constant")
#: The backend each strategy needs (keras_okd.distribute.strategy_scope refuses the others).
STRATEGY_BACKENDS = {name: engine for name, engine in STRATEGY_ENGINES.items() if engine}
#: Values of a preset's `views` param: per-peer augmentation made in the training step (keras_okd.data.peer_views).
VIEWS = (None, "standard", "crop")
#: Preset arguments the runner sets itself; a config cannot give them.
RUNNER_ARGUMENTS = ("students", "student", "num_train_samples", "name")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
#: Bounds of one config document: its bytes, and its nodes counted with every alias expanded (a config of a few
#: dozen keys has about a hundred; nested aliases multiply, and a 724-byte file of 7 levels of nine holds 5 million).
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 20_000
#: Longest accepted free-text values: `experiment` (a directory name) and `paper` (a heading).
MAX_EXPERIMENT_CHARS = 128
MAX_PAPER_CHARS = 500


class ConfigError(ValueError):
    """An invalid config. `errors` lists one message per problem, each starting with `file:line: key:`.

    A subclass of `ValueError`, raised by `load_config`, `config_from_dict` and the runner's checks before anything
    is written; every problem is listed at once, so one round of fixes suffices. The CLI prints the message and exits
    with status 2.

    Args:
        errors: the problems, one message each.

    Example:

    >>> from keras_okd.experiments import ConfigError, config_from_dict
    >>> try:
    ...     config_from_dict({"experiment": "quick", "method": {"name": "dml"},
    ...                       "students": ["simple_cnn", "simple_cnn"], "dataset": {"name": "digits"},
    ...                       "optimizer": {"name": "sgd", "learning_rate": -1}, "epochs": 0})
    ... except ConfigError as error:
    ...     for problem in error.errors:
    ...         print(problem)
    <dict>: optimizer.learning_rate: got -1.0; accepted: a number > 0.
    <dict>: epochs: must be >= 1, got 0.
    """

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("invalid experiment config:\n  " + "\n  ".join(self.errors))


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4`-style numbers (no dot) as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_value(text):
    """A `--set` value: YAML (`0.5` -> float, `true` -> bool, `[a, b]` -> list, `null` -> None, `abc` -> str)."""
    return yaml.load(text, Loader=_Loader) if text.strip() else None


# ---------------------------------------------------------------------------------------------------------- sources
class _Sources:
    """Where each key came from: `file:line` of its YAML node, or the `--set` override that wrote it."""

    def __init__(self, path):
        self.path = path
        self.lines = {}
        self.overrides = {}

    def read_marks(self, node, prefix=()):
        if prefix == ():
            self.lines[()] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = prefix + (key_node.value,)
                self.lines[key] = key_node.start_mark.line + 1
                self.read_marks(value_node, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[prefix + (i,)] = item.start_mark.line + 1
                self.read_marks(item, prefix + (i,))

    def where(self, path):
        path = tuple(path)
        for end in range(len(path), -1, -1):  # an override of the key or of a section above it set the value
            if path[:end] in self.overrides:
                return f"--set {self.overrides[path[:end]]}"
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return f"{self.path}:{self.lines[path[:end]]}"
        return str(self.path)


def _key(path):
    return ".".join(str(p) for p in path) or "<top level>"


# ---------------------------------------------------------------------------------------------------------- loading
def load_config(path, overrides=(), check_params=True):
    """Read, override and check an experiment config file.

    Args:
        path: a YAML file following the schema in this module's docstring.
        overrides: `"key.sub=value"` strings (the CLI's `--set`), applied in order.
        check_params: also try the method's params on its preset (builds a throw-away distiller of two tiny
            students, so that the preset's own range checks speak now, with the key's line); False for configs that
            were checked when their run was written (`config.yaml` of a run directory).

    Returns:
        The resolved config: a `ResolvedConfig` (a dict with every section and default filled in, that remembers
        each key's file line: `config.where("method", "params", "beta")`).

    Raises:
        ConfigError: the file does not exist, is a directory or does not read, is not valid YAML, or the config
            breaks the schema; every problem is listed with its file and line (or `--set`).

    Example:

    ```python
    config = load_config("configs/digits/tsb.yaml", ["epochs=5", "method.params.beta=0.5"])
    ```
    """
    path = str(path)
    data, sources = read_yaml(path)
    return _resolve(data, sources, overrides, check_params)


def read_yaml(path):
    """`(data, sources)` of a config file, read safely: UTF-8 text of at most `MAX_CONFIG_BYTES`, one YAML document
    of at most `MAX_CONFIG_NODES` nodes with its aliases expanded (counted on the composed graph, where an alias is
    one shared node, so a nested-alias bomb is refused in microseconds), no key given twice in one mapping, no alias
    that contains itself. `sources` knows each key's line.

    Raises:
        ConfigError: the file is missing, a directory, unreadable, not UTF-8 text, too large, not valid YAML, has a
            duplicate key (naming both lines) or too many nodes.

    Example:

    >>> import os, tempfile
    >>> from keras_okd.experiments import ConfigError
    >>> from keras_okd.experiments.config import read_yaml
    >>> path = os.path.join(tempfile.mkdtemp(), "c.yaml")
    >>> with open(path, "w") as f:
    ...     _ = f.write("epochs: 4\\nseeds: [0]\\nepochs: 8\\n")
    >>> try:
    ...     read_yaml(path)
    ... except ConfigError as error:
    ...     print(error.errors[0].split(": ", 1)[1])
    epochs: given twice, at lines 1 and 3 (YAML keeps the last silently); keep one.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such config file."]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a config file (configs/ holds the papers' configs, "
                           "e.g. configs/digits/tsb.yaml)."]) from None
    except OSError as error:
        raise ConfigError([f"{path}: cannot be read ({type(error).__name__}: {error})."]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: is larger than {MAX_CONFIG_BYTES:,} bytes; a config is a short YAML file "
                           "(configs/ holds examples)."])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: is not UTF-8 text (byte 0x{raw[error.start]:02x} at offset "
                           f"{error.start}): a config is a YAML text file; is this the right file?"]) from None
    sources = _Sources(path)
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_graph(node, path)
                sources.read_marks(node)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"{path}{line}: not valid YAML: {getattr(error, 'problem', None) or error}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: nests its values deeper than the YAML reader can follow; a config has a few "
                           "levels."]) from None
    return data, sources


def _check_graph(root, path):
    """Refuse a composed YAML graph with more than `MAX_CONFIG_NODES` nodes once its aliases are expanded, an alias
    that contains itself, or a mapping that gives a key twice. Each node is visited once (sizes are memoized)."""
    sizes, active, errors = {}, set(), []

    def size(node):
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError([f"{path}:{node.start_mark.line + 1}: an alias refers to the node that contains it "
                               "(a structure without end); a config cannot hold one."])
        active.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    if key_node.value in seen:
                        errors.append(f"{path}:{key_node.start_mark.line + 1}: {key_node.value}: given twice, at "
                                      f"lines {seen[key_node.value]} and {key_node.start_mark.line + 1} (YAML keeps "
                                      "the last silently); keep one.")
                    seen.setdefault(key_node.value, key_node.start_mark.line + 1)
                total += size(key_node) + size(value_node)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item)
        active.discard(key)
        sizes[key] = total
        return total

    count = size(root)
    if count > MAX_CONFIG_NODES:
        raise ConfigError([f"{path}: holds {count:,} YAML nodes once its aliases (*name) are expanded, more than the "
                           f"{MAX_CONFIG_NODES:,} a config may have (nested aliases multiply); write the values "
                           "out, or use fewer aliases."])
    if errors:
        raise ConfigError(errors)


def load_run_config(path, import_plugins=False):
    """A run directory's `config.yaml` (the resolved config the runner wrote), for reading the run: `evaluate`,
    `report`.

    A config without `imports:` is checked in full (`load_config(path, check_params=False)`). One with `imports:` is,
    unless `import_plugins`, read without importing them: importing a plugin runs its code, and a run directory
    received from someone else must be readable without running theirs. Its sections are then checked for the
    shapes a reader needs (names are not looked up: the plugins may register them).

    Args:
        path: the run's `config.yaml`.
        import_plugins: import the config's plugins and check it in full (runs their code).

    Returns:
        A `ResolvedConfig`.

    Raises:
        ConfigError: the file does not read, or a section does not have the shape the runner writes.

    Example:

    ```python
    config = load_run_config("runs/x/seed_0/config.yaml")       # its plugins are not imported
    config["imports"], config["method"]["name"], config["students"]
    ```
    """
    path = str(path)
    data, sources = read_yaml(path)
    if import_plugins or not (isinstance(data, dict) and data.get("imports")):
        return load_config(path, check_params=False)
    # every section of a resolved config, but validation_freq (runs written before it existed lack it)
    checks = {key: spec.types for key, spec in TOP.items() if key != "validation_freq"}
    errors = [f"{sources.where((key,))}: {key}: expected {_describe(kind)}"
              f", got {type(data.get(key)).__name__} (a run's config.yaml holds every section)."
              for key, kind in checks.items() if not isinstance(data.get(key), kind)]
    for section in ("method", "dataset", "optimizer"):
        if isinstance(data.get(section), dict) and not isinstance(data[section].get("name"), str):
            errors.append(f"{sources.where((section,))}: {section}.name: expected a string.")
    if isinstance(data.get("seeds"), list) and not all(isinstance(v, int) for v in data["seeds"]):
        errors.append(f"{sources.where(('seeds',))}: seeds: expected integers.")
    if errors:
        raise ConfigError(errors)
    resolved = ResolvedConfig(data)
    resolved.sources = sources
    return resolved


def config_from_dict(data, overrides=(), source="<dict>", check_params=True):
    """Check (and override) a config given as a dict; like `load_config` without a file.

    Args:
        data: the config as a dict (the schema of this module's docstring); not changed.
        overrides: `"key.sub=value"` strings, applied in order (as the CLI's `--set`).
        source: the name problems are reported under (in place of `file:line`).
        check_params: also try the method's params on its preset (see `load_config`).

    Returns:
        A `ResolvedConfig`: a dict with every section and default filled in.

    Raises:
        ConfigError: the config breaks the schema; every problem is listed.

    Example:

    >>> from keras_okd.experiments import config_from_dict
    >>> config = config_from_dict({"experiment": "quick", "method": {"name": "dml"},
    ...     "students": ["simple_cnn", "simple_cnn"], "dataset": {"name": "digits", "batch_size": 64},
    ...     "optimizer": {"name": "sgd", "learning_rate": 0.05}, "epochs": 2}, overrides=["method.params.temperature=3"])
    >>> config["method"], config["seeds"]
    ({'name': 'dml', 'params': {'temperature': 3.0, 'weight': 1.0, 'reduction': 'mean', 'features': None}}, [0])
    >>> config["schedule"], config["validation_freq"]
    ({'type': 'constant', 'warmup_epochs': 0.0}, 1)
    """
    return _resolve(copy.deepcopy(data), _Sources(source), overrides, check_params)


class ResolvedConfig(dict):
    """A checked config: a plain dict (saved as `config.yaml`) that also remembers where each key came from, so that
    later checks (the runner's: a dataset option its loader refuses, a network too deep for the images) can name the
    file line."""

    sources = None

    def where(self, *path):
        """`file:line` (or `--set ...`) of the key at `path`, e.g. `where("dataset", "batch_size")`."""
        return self.sources.where(path) if self.sources is not None else "<config>"


def where(config, *path):
    """`config.where(*path)` for a `ResolvedConfig`, else `"<config>"`."""
    return config.where(*path) if isinstance(config, ResolvedConfig) else "<config>"


def with_seed(config, seed):
    """A copy of a resolved config for one run: `seeds: [seed]` (keeps a `ResolvedConfig`'s lines)."""
    out = ResolvedConfig({**config, "seeds": [int(seed)]})
    out.sources = getattr(config, "sources", None)
    return out


def _resolve(data, sources, overrides, check_params=True):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{sources.where(())}: the config must be a mapping of keys (experiment, method, ...), "
                           f"got {type(data).__name__}."])
    errors = []
    for expression in overrides:
        _apply_override(data, expression, sources, errors)
    if errors:
        raise ConfigError(errors)
    imports = _load_imports(data.get("imports", []), sources)
    resolved = ResolvedConfig(_Validator(sources, check_params).validate(data, imports))
    resolved.sources = sources
    return resolved


def _load_imports(value, sources):
    """Import the config's plugins (`imports:`) so that the names they register can be checked; their resolved
    specs: absolute paths for files (so a run directory's `config.yaml` finds them again), module names as given.

    Raises:
        ConfigError: `imports` is not a list of strings, or a plugin is missing or fails to import (the message names
            the file, and the plugin's own error with its line).
    """
    if not isinstance(value, list) or not all(isinstance(spec, str) and spec.strip() for spec in value):
        raise ConfigError([f"{sources.where(('imports',))}: imports: expected a list of plugin files (.py, relative "
                           f"to the config's folder) or module names, e.g. [my_method.py], got {value!r}."])
    resolved, errors = [], []
    for i, spec in enumerate(value):
        where = sources.where(("imports", i))
        if where.startswith("--set") or sources.path.startswith("<"):
            base_dir = os.getcwd()
        else:
            base_dir = os.path.dirname(os.path.abspath(sources.path))
        try:
            module = load_plugin(spec, base_dir=base_dir)
        except PluginError as error:
            hint = f" Give a .py file (relative to {base_dir}) or an importable module name." if error.missing else ""
            errors.append(f"{where}: imports.{i}: {error}{hint}")
            continue
        is_file = getattr(module, "__name__", "").startswith("keras_okd_plugin_")
        resolved.append(os.path.abspath(module.__file__) if is_file else spec)
    if errors:
        raise ConfigError(errors)
    return resolved


def _apply_override(data, expression, sources, errors):
    if "=" not in expression:
        errors.append(f"--set {expression}: expected key=value (e.g. method.params.beta=0.5).")
        return
    key, text = expression.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        errors.append(f"--set {expression}: empty key.")
        return
    try:
        value = parse_value(text)
    except yaml.YAMLError as error:
        errors.append(f"--set {expression}: the value is not valid YAML ({getattr(error, 'problem', error)}).")
        return
    node, path = data, []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not re.fullmatch(r"-?[0-9]+", part) or not -len(node) <= int(part) < len(node):
                errors.append(f"--set {expression}: {_key(path)} is a list of {len(node)} items; "
                              f"{part!r} is not a position in it.")
                return
            step = int(part) % len(node)
        elif isinstance(node, dict):
            step = part
            if not last and not isinstance(node.get(part), (dict, list)):
                node[part] = {}
        else:
            errors.append(f"--set {expression}: {_key(path)} is {type(node).__name__}, not a mapping or list.")
            return
        path.append(step)
        if last:
            node[step] = value
        else:
            node = node[step]
    sources.overrides[tuple(path)] = expression.strip()


# ---------------------------------------------------------------------------------------------------------- types
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
               dict: "a mapping", type(None): "null"}


def _types_of(parameter):
    """Accepted Python types of a function parameter, from its annotation or else its default; None for any."""
    annotation = parameter.annotation
    if annotation is not inspect.Parameter.empty and not isinstance(annotation, str):
        args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or typing.get_origin(
            annotation) is typing.Union else (annotation,)
        accepted = tuple(list if a is tuple else a for a in (typing.get_origin(a) or a for a in args))
        return accepted if all(a in _TYPE_NAMES for a in accepted) else None
    default = parameter.default
    if isinstance(default, (list, tuple)):
        return (list,)
    return (type(default),) if type(default) in (bool, int, float, str, dict) else None


def _matches(value, accepted):
    """`(ok, value)`: whether `value` has one of the `accepted` types (ints count as floats, bools only as bools)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    for kind in accepted or ():
        if kind is float and number:
            return True, float(value)
        if (kind is int and number and isinstance(value, int)) or (kind is not int and isinstance(value, kind)):
            return True, value
    return accepted is None, value


def _describe(accepted):
    return " or ".join(_TYPE_NAMES.get(kind, kind.__name__) for kind in accepted)


def _yaml_able(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_yaml_able(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _yaml_able(v) for k, v in value.items())
    return False


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------------------- schema
# A rule is a function of a well-typed value that returns what is wrong with it, or None.
def _rule(test, message):
    return lambda value: None if test(value) else message(value)


def _must(test, accepted):
    return _rule(test, lambda value: f"must be {accepted}, got {value}.")


def _within(test, accepted):
    """`got <value>; accepted: <accepted>.` for a number, or a list of numbers, that fails `test`."""
    def numbers(value):
        return value if isinstance(value, list) else [value]

    return _rule(lambda value: not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers(value))
                 or all(test(v) for v in numbers(value)), lambda value: f"got {value!r}; accepted: {accepted}.")


def _closest(name, known):
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_of(kind, known, advice=""):
    """`unknown <kind> ...; known: ...` for a name not in `known`: names, or the registry module whose `names()`
    (read when the rule runs: plugins add to them) they are."""
    def problem(name):
        names = list(importlib.import_module(known).names() if isinstance(known, str) else known)
        return None if name in names else (f"unknown {kind} {name!r}{_closest(name, names)}; known: "
                                           f"{', '.join(names)}.{advice}")

    return problem


def _zoo_name(name):
    try:
        importlib.import_module("keras_okd.models.registry").lookup(name)
    except ValueError as error:
        return str(error)
    return None


#: Ranges of dataset options, by name, for every loader that takes them.
DATASET_RANGES = {
    **dict.fromkeys(("batch_size", "validation_size", "shuffle_buffer", "resize", "image_size"),
                    _within(lambda v: v >= 1, "a number >= 1")),
    **dict.fromkeys(("padding", "split_seed"), _within(lambda v: v >= 0, "a number >= 0")),
    "channels": _within(lambda v: v in (1, 3), "1 (grayscale) or 3 (RGB)"),
    "validation_split": _within(lambda v: 0 < v < 1, "a fraction in (0, 1)"),
}
#: Ranges of optimizer arguments (Keras checks some of them itself, not these).
OPTIMIZER_RANGES = {
    **dict.fromkeys(("learning_rate", "epsilon", "clipnorm", "clipvalue", "global_clipnorm"),
                    _within(lambda v: v > 0, "a number > 0")),
    "weight_decay": _within(lambda v: v >= 0, "a number >= 0"),
    **dict.fromkeys(("momentum", "beta_1", "beta_2", "rho"), _within(lambda v: 0 <= v < 1, "a number in [0, 1)")),
    "ema_momentum": _within(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
}

_REQUIRED = object()
#: A key of a section: its accepted types (None: any), its default (`_REQUIRED`: none), its rules (the first problem
#: found is reported), a hint (or a function returning it) that the errors about a missing or mistyped value add,
#: for a list each item's `_Key`, and for a section the `_Validator` method that checks and resolves it.
_Key = collections.namedtuple("_Key", ["types", "default", "rules", "hint", "items", "section"],
                              defaults=[_REQUIRED, (), "", None, None])


def _hint(key):
    return key.hint() if callable(key.hint) else key.hint


_ZOO_NAME = _Key((str,), rules=(_zoo_name,))
_WARMUP = _Key((float,), 0.0, (_must(lambda v: v >= 0, ">= 0 (epochs of linear learning-rate warm-up)"),))
#: The config's keys, in the order of the resolved config.
TOP = {
    "experiment": _Key((str,), rules=(
        _rule(lambda v: len(v) <= MAX_EXPERIMENT_CHARS,
              lambda v: f"names a directory: at most {MAX_EXPERIMENT_CHARS} characters, got {len(v):,}."),
        _rule(_NAME_PATTERN.match, lambda v: f"{v!r} names directories: use letters, digits and _ . + - only."))),
    "paper": _Key((str,), "", (_rule(lambda v: len(v) <= MAX_PAPER_CHARS, lambda v: f"is a heading: at most "
                                     f"{MAX_PAPER_CHARS} characters, got {len(v):,} ({v[:40]!r}...)."),)),
    "imports": _Key((list,), []),  # imported, and checked, before the rest (_load_imports)
    "method": _Key((dict,), hint=" ({name: <a method>, params: {...}})", section="method"),
    "students": _Key((list, dict), hint=" (zoo names, [resnet32, resnet32], or a multi-branch student, {model: "
                     "resnet32, branches: 3})", section="students"),
    "dataset": _Key((dict,), hint=" ({name: <a dataset>, <its loader's options>})", section="dataset"),
    "optimizer": _Key((dict,), hint=" ({name: <a Keras optimizer>, <its arguments>})", section="optimizer"),
    "schedule": _Key((dict,), {"type": "constant"}, section="schedule"),
    "epochs": _Key((int,), rules=(_must(lambda v: v >= 1, ">= 1"),)),
    "validation_freq": _Key((int,), 1, (_must(lambda v: v >= 1, ">= 1 (validate every that many epochs)"),)),
    "seeds": _Key((list,), [0], (_rule(len, lambda v: "needs at least one seed."),
                                 _rule(lambda v: len(set(v)) == len(v), lambda v: f"seeds must be distinct, got {v}.")),
                  items=_Key((int,), rules=(_within(lambda v: 0 <= v < 2**32, "an integer in [0, 2**32 - 1] (numpy's "
                                                                                    "seed range)"),))),
    "strategy": _Key((str,), "none", (_rule(lambda v: v in STRATEGIES, lambda v: f"{v!r} is not a strategy; use one "
                                            f"of {', '.join(STRATEGIES)} (see keras_okd.distribute)."),)),
}
TOP_LEVEL = tuple(TOP)
REQUIRED = tuple(key for key, spec in TOP.items() if spec.default is _REQUIRED)
SCHEDULE = {"type": _Key((str,), "constant", (_one_of("schedule", SCHEDULES),)), "warmup_epochs": _WARMUP}
STEP_SCHEDULE = {
    "type": SCHEDULE["type"],
    "milestones": _Key((list,), hint=" (epochs at which the rate is multiplied by factor)", items=_Key((int,)),
                       rules=(_rule(lambda v: all(m >= 1 for m in v) and all(b > a for a, b in zip(v, v[1:])),
                                    lambda v: f"must be increasing epochs >= 1, got {v}."),)),
    "factor": _Key((float,), 0.1, (_must(lambda v: v > 0, "> 0"),)),
    "warmup_epochs": _WARMUP,
}
BRANCH_STUDENT = {"model": _ZOO_NAME._replace(hint=" (a zoo name)"),
                  "branches": _Key((int,), 3, (_must(lambda v: v >= 1, ">= 1"),)),
                  "per_branch_inputs": _Key((bool, type(None)), None)}
STUDENT_LIST = _Key((list,), items=_ZOO_NAME, rules=(_rule(lambda v: len(v) >= 2, lambda v: (
    f"online distillation trains 2 or more students, got {len(v)}; to train one network alone, use method "
    "independent with two copies of it.")),))
METHOD = {"name": _Key((str,), hint=" (one of keras_okd.methods.names())", rules=(_one_of(
              "method", "keras_okd.methods", " A method of your own: list its file under `imports:` (see "
              "keras_okd.registry)."),)),
          "params": _Key((dict, type(None)), None)}
VIEWS_RULE = _rule(lambda v: v in VIEWS, lambda v: f"per-peer views are one of {', '.join(map(str, VIEWS))} (null: "
                   f"every peer sees the same batch), got {v!r}.")
#: The `name` of the sections whose other keys are a function's arguments.
DATASET_NAME = _Key((str,), hint=lambda: f" (one of {', '.join(importlib.import_module('keras_okd.data').names())})",
                    rules=(_one_of("dataset", "keras_okd.data"),))
OPTIMIZER_NAME = _Key((str,), hint=" (a Keras optimizer: sgd, adam, adamw, rmsprop, ...)")


# ---------------------------------------------------------------------------------------------------------- checks
class _Validator:
    def __init__(self, sources, check_params=True):
        self.sources = sources
        self.check_params = check_params
        self.errors = []

    def error(self, path, message):
        self.errors.append(f"{self.sources.where(path)}: {_key(path)}: {message}")

    def unknown(self, path, key, known):
        self.error(path + (key,), f"unknown key{_closest(key, known)}; known keys here: {', '.join(map(str, known))}.")

    def typed(self, path, value, accepted, hint=""):
        ok, converted = _matches(value, accepted)
        if not ok:
            self.error(path, f"expected {_describe(accepted)}{hint}, got {type(value).__name__} {value!r}"
                       + _string_number_hint(value))
        elif isinstance(converted, float) and not math.isfinite(converted):
            self.error(path, f"must be a finite number, got {converted!r}.")
            ok = False
        return ok, converted

    def value(self, path, value, key):
        """`(ok, value)`: `value` checked (and for a section resolved) by the `_Key` `key`; problems reported at
        `path`."""
        ok, value = self.typed(path, value, key.types, _hint(key))
        if ok and key.items is not None:
            checked = [self.value(path + (i,), item, key.items) for i, item in enumerate(value)]
            ok, value = all(good for good, _ in checked), [item for _, item in checked]
        for rule in key.rules if ok else ():
            problem = rule(value)
            if problem:
                self.error(path, problem)
                return False, value
        if ok and key.section:
            value = getattr(self, key.section)(value)
        return ok, value

    def fields(self, path, value, keys, others=False):
        """The keys of the mapping `value` that pass their checks (`keys`: name -> `_Key`), defaults filled in; with
        `others`, also its other keys, unchecked (else each is an unknown key)."""
        resolved = {}
        for name in value:
            if name in keys:
                continue
            if others:
                resolved[name] = value[name]
            else:
                self.unknown(path, name, keys)
        for name, key in keys.items():
            if name not in value and key.default is _REQUIRED:
                self.error(path, f"missing required key {name!r}{_hint(key)}.")
                continue
            ok, checked = self.value(path + (name,), value[name] if name in value else copy.deepcopy(key.default),
                                     key)
            if ok:
                resolved[name] = checked
        return resolved

    def named(self, path, value, name):
        """`(name, options)` of a section whose `name` (checked by the `_Key` `name`) picks a function and whose other
        keys are its options; the name is None when it is missing or refused."""
        options = self.fields(path, value, {"name": name}, others=True)
        return options.pop("name", None), options

    def ranged(self, path, values, rules):
        for key, value in values.items():
            problem = rules[key](value) if key in rules else None
            if problem:
                self.error(path + (key,), problem)

    def validate(self, data, imports=()):
        resolved = {**self.fields((), data, TOP), "imports": list(imports)}
        epochs, freq = resolved.get("epochs"), resolved.get("validation_freq")
        if epochs and freq and epochs % freq:
            self.error(("validation_freq",), f"{freq} does not divide epochs: {epochs}, so the last epoch would not be "
                       "validated and the run would have no final scores; use a divisor of epochs.")
        students, method, dataset = resolved.get("students"), resolved.get("method"), resolved.get("dataset")
        if isinstance(students, list) and students and method and takes_one_student(method["name"]):
            self.error(("students",), f"method {method['name']!r} trains the branches of one multi-branch student: "
                       f"write students: {{model: {students[0]}, branches: {len(students)}}}.")
        if method and method["params"].get("views") and dataset and dataset.get("augment") is not None:
            warnings.warn(f"{self.sources.where(('dataset', 'augment'))}: the method makes per-peer views "
                          f"(views: {method['params']['views']}) and the dataset pipeline augments too "
                          f"(augment: {dataset['augment']}): images are augmented twice; set dataset.augment: null.",
                          stacklevel=3)
        if isinstance(students, dict) and students.get("per_branch_inputs") is None:
            # One input per branch exactly when the method gives each branch its own view.
            students["per_branch_inputs"] = bool(method and method["params"].get("views"))
        if self.check_params and method and not self.errors:
            self.try_params(method, students)
        if self.errors:
            raise ConfigError(self.errors)
        return {key: resolved[key] for key in TOP_LEVEL if key in resolved}

    def try_params(self, method, students):
        """Let the preset check the given params (its own range checks) on a throw-away distiller of tiny students;
        when it refuses them, try each alone to name the key (and line) it refuses."""
        name, params = method["name"], method["params"]
        given = [k for k in getattr(self, "given_params", []) if k in params]
        if not given:
            return
        if isinstance(students, dict):
            shape = ("branches", students["branches"], bool(students["per_branch_inputs"]))
        else:
            shape = ("students", len(students) if isinstance(students, list) else 2, False)
        problem = _trial_preset(name, _frozen({k: params[k] for k in given}), shape)
        if not problem:
            return
        alone = {key: _trial_preset(name, _frozen({key: params[key]}), shape) for key in given}
        for key, refusal in alone.items():
            if refusal:
                self.error(("method", "params", key), f"{params[key]!r} is refused by the {name} preset: {refusal}")
        if not any(alone.values()):
            self.error(("method", "params"), f"the {name} preset refuses these params together: {problem}")

    # -------------------------------------------------------------------------------------------------- sections
    def method(self, value):
        path = ("method",)
        fields = self.fields(path, value, METHOD)
        if "name" not in fields or "params" not in fields:
            return None
        import keras_okd.methods

        name, params = fields["name"], fields["params"] or {}
        self.given_params = [k for k in params if k not in RUNNER_ARGUMENTS]
        resolved = self.arguments(path + ("params",), params, keras_okd.methods.get(name), f"method {name!r}",
                                  skip_first=True)
        self.ranged(path + ("params",), {"views": resolved.get("views")}, {"views": VIEWS_RULE})
        return {"name": name, "params": resolved}

    def arguments(self, path, given, function, what, skip_first=False, exclude=RUNNER_ARGUMENTS, fill=True,
                  open_ended=None):
        """Check `given` against `function`'s keyword arguments; return them with the defaults filled in.

        Keys the signature does not name are errors, unless it takes `**kwargs` (or `open_ended` is True)."""
        parameters = list(inspect.signature(function).parameters.values())
        if skip_first and parameters and parameters[0].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                                inspect.Parameter.POSITIONAL_OR_KEYWORD):
            parameters = parameters[1:]
        if open_ended is None:
            open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
        allowed = {p.name: p for p in parameters if p.name not in exclude and p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
        resolved = {}
        for key, value in given.items():
            if key in exclude:
                self.error(path + (key,), f"is set by the runner, not by the config ({what}).")
            elif key in allowed:
                _, resolved[key] = self.typed(path + (key,), value, _types_of(allowed[key]))
            elif open_ended:
                resolved[key] = value
            else:
                self.unknown(path, key, sorted(allowed))
        for key, parameter in allowed.items():
            if key not in resolved and parameter.default is inspect.Parameter.empty:
                self.error(path, f"{what} needs {key!r}.")
            elif key not in resolved and fill and _yaml_able(parameter.default):
                resolved[key] = _plain(parameter.default)
        return {key: resolved[key] for key in [*allowed, *sorted(set(resolved) - set(allowed))] if key in resolved}

    def students(self, value):
        if isinstance(value, dict):
            return self.fields(("students",), value, BRANCH_STUDENT)
        return self.value(("students",), value, STUDENT_LIST)[1]

    def dataset(self, value):
        path = ("dataset",)
        name, options = self.named(path, value, DATASET_NAME)
        if name is None:
            return None
        import keras_okd.data

        if "seed" in options:
            self.error(path + ("seed",), "is the run's seed: set `seeds:` (or --seed) instead.")
            options.pop("seed")
        resolved = self.arguments(path, options, keras_okd.data.loader(name), f"dataset {name!r}",
                                  exclude=("seed",))
        self.ranged(path, resolved, DATASET_RANGES)
        return {"name": name, **resolved}

    def optimizer(self, value):
        path = ("optimizer",)
        name, options = self.named(path, value, OPTIMIZER_NAME)
        if name is None:
            return None
        import keras

        try:
            cls = type(keras.optimizers.get(name.lower()))
        except ValueError:
            self.error(path + ("name",), f"{name!r} is not a Keras optimizer name (sgd, adam, adamw, rmsprop, ...).")
            return None
        errors_before = len(self.errors)
        resolved = self.arguments(path, options, cls.__init__, f"optimizer {name!r}", skip_first=True,
                                  exclude=("name",), fill=False, open_ended=False)
        if "learning_rate" in resolved:
            self.typed(path + ("learning_rate",), resolved["learning_rate"], (float,))
        self.ranged(path, resolved, OPTIMIZER_RANGES)
        if len(self.errors) == errors_before:
            try:
                cls(**resolved)
            except Exception as error:  # the optimizer's own argument checks
                self.error(path, f"Keras refused these arguments: {type(error).__name__}: {error}")
        return {"name": name.lower(), **resolved}

    def schedule(self, value):
        return self.fields(("schedule",), value, STEP_SCHEDULE if value.get("type") == "step" else SCHEDULE)


def _frozen(params):
    return json.dumps(params, sort_keys=True)


@functools.lru_cache(maxsize=256)
def _trial_preset(name, params, shape):
    """The preset's refusal (`"ValueError: ..."`) of `params` (JSON) on tiny students of `shape`, or None."""
    import keras

    import keras_okd

    params = json.loads(params)
    kind, count, per_branch_inputs = shape
    preset = keras_okd.methods.get(name)
    if isinstance(params.get("views"), str):
        params["views"] = keras_okd.data.peer_views(8, 8, padding=1, flip=params["views"] == "standard")
    if method_accepts(preset, "num_train_samples"):
        params["num_train_samples"] = 8
    if method_accepts(preset, "teacher") and params.get("teacher") is None:
        # a pretrained teacher is given at training time (--set method.params.teacher=PATH); the build refuses
        # a missing one then, before any file is written. Here the other parameters are tried with a stand-in.
        params["teacher"] = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    try:
        with warnings.catch_warnings():  # the libraries' deprecation notes while building throw-away models
            warnings.simplefilter("ignore", DeprecationWarning)
            students = _tiny_students(kind, count, per_branch_inputs)
            preset(students, **params)
    except (ValueError, TypeError) as error:
        return f"{type(error).__name__}: {' '.join(str(error).split())}"
    return None


def _tiny_students(kind, count, per_branch_inputs):
    """The cheapest students a preset accepts: `count` zoo simple CNNs of width 1 on 8x8 images, or one multi-branch
    model of `count` one-layer branches (the output layout of `keras_okd.models.multi_branch`)."""
    import keras

    import keras_okd

    if kind != "branches":  # the zoo's layer names (stage_1, stage_2, pool), which feature knowledge reads
        return [keras_okd.models.get("simple_cnn", num_classes=3, input_shape=(8, 8, 1), width=1) for _ in range(count)]
    inputs = [keras.Input((8, 8, 1)) for _ in range(count if per_branch_inputs else 1)]
    flat = [keras.layers.Flatten()(x) for x in inputs]
    features = [flat[i] if per_branch_inputs else flat[0] for i in range(count)]
    outputs = {"logits": [keras.layers.Dense(3)(f) for f in features], "features": features,
               "shared_features": flat[0]}
    return keras.Model(inputs if per_branch_inputs else inputs[0], outputs)


def takes_one_student(method):
    """Whether a preset's first argument is one (multi-branch) `student` rather than a list of `students`."""
    import keras_okd.methods

    if method not in keras_okd.methods.names():
        return False
    parameters = list(inspect.signature(keras_okd.methods.get(method)).parameters)
    return bool(parameters) and parameters[0] == "student"


def _string_number_hint(value):
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return "."
        return " (a quoted number? write it without quotes)."
    return "."


# ---------------------------------------------------------------------------------------------------------- output
def dump_config(config, path=None):
    """The resolved config as YAML text (keys in schema order); written to `path` when given.

    Args:
        config: a resolved config (`load_config`, `config_from_dict`).
        path: file to write the text to (None: only return it).

    Returns:
        The YAML text, which `load_config` reads back to the same config.

    Example:

    >>> from keras_okd.experiments import config_from_dict, dump_config
    >>> config = config_from_dict({"experiment": "quick", "method": {"name": "dml"},
    ...     "students": ["simple_cnn", "simple_cnn"], "dataset": {"name": "digits", "batch_size": 64},
    ...     "optimizer": {"name": "sgd", "learning_rate": 0.05}, "epochs": 2})
    >>> print(dump_config(config), end="")
    experiment: quick
    paper: ''
    imports: []
    method:
      name: dml
      params: {temperature: 1.0, weight: 1.0, reduction: mean, features: null}
    students: [simple_cnn, simple_cnn]
    dataset: {name: digits, batch_size: 64, validation_size: 360, split_seed: 0, augment: null, shuffle: true}
    optimizer: {name: sgd, learning_rate: 0.05}
    schedule: {type: constant, warmup_epochs: 0.0}
    epochs: 2
    validation_freq: 1
    seeds: [0]
    strategy: none
    """
    text = yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=None, width=120)
    if path is not None:
        with open(path, "w") as f:
            f.write(text)
    return text


def config_differences(a, b, prefix=()):
    """Dotted keys whose values differ between two resolved configs."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(a) + [k for k in b if k not in a]
        return [d for k in keys for d in config_differences(a.get(k, _MISSING), b.get(k, _MISSING), prefix + (k,))]
    return [] if a == b else [_key(prefix)]


_MISSING = object()


def method_accepts(preset, argument):
    """Whether the preset function takes `argument` by name."""
    return argument in inspect.signature(preset).parameters


def default_run_dir(config, root="runs"):
    """`runs/<experiment>/<method>`: where `keras-okd train --config` puts a config's runs (one `seed_<s>` each)."""
    return os.path.join(root, config["experiment"], config["method"]["name"])
