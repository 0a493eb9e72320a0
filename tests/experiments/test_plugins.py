"""Plugins: a config's `imports:` and the CLI's `--import` register methods before any name is checked; the run
directory keeps them; a missing or broken plugin is a clear error (CLI exit 2, no traceback); the CLI takes its method
names, strategies and step schedule from one definition each."""

import json
import os
import sys

import numpy as np
import pytest

import keras_okd
from keras_okd import cli, distribute
from keras_okd.experiments import ConfigError, config, config_from_dict, load_config
from keras_okd.experiments.runner import read_history
from keras_okd.experiments.schedules import learning_rate, rate_at
from keras_okd.registry import PluginError, load_plugin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE_YAML = os.path.join(ROOT, "examples", "new_method.yaml")
EXAMPLE_PY = os.path.join(ROOT, "examples", "new_method.py")
# The example's config made tiny: 500 training digits in two batches, two students, one epoch.
TINY = ["epochs=1", "dataset.batch_size=250", "dataset.validation_size=1297", "students=[simple_cnn, simple_cnn]"]


@pytest.fixture(autouse=True)
def _registry_as_it_was():
    """Methods and models the tests' plugins register do not outlive the test."""
    registries = [keras_okd.methods._METHODS, keras_okd.models.registry._ZOO]
    saved = [dict(r._entries) for r in registries]
    yield
    for registry, entries in zip(registries, saved):
        registry._entries.clear()
        registry._entries.update(entries)


def _forget_example(monkeypatch):
    """Make this process forget the example plugin (as a fresh process would not know it)."""
    methods = keras_okd.methods._METHODS._entries
    if "confident_peer" in methods:
        monkeypatch.delitem(methods, "confident_peer")
    monkeypatch.delitem(sys.modules, "keras_okd_plugin_new_method", raising=False)


@pytest.mark.heavy
def test_the_example_plugin_trains_from_its_config_through_the_cli(tmp_path, monkeypatch, capsys):
    _forget_example(monkeypatch)
    run_dir = tmp_path / "run"
    argv = ["train", "--config", EXAMPLE_YAML, "--run-dir", str(run_dir), "--verbose", "0"]
    for item in TINY:
        argv += ["--set", item]
    assert cli.main(argv) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == "confident_peer" and results["epochs"] == 1
    rows = read_history(run_dir / "history.csv")
    assert len(rows) == 1 and np.isfinite(rows[0]["student_1_confident"])  # the plugin's part was trained
    saved = load_config(run_dir / "config.yaml", check_params=False)
    assert saved["imports"] == [EXAMPLE_PY]

    # A fresh process knows nothing of the plugin: the run directory's config.yaml loads it again.
    _forget_example(monkeypatch)
    assert load_config(run_dir / "config.yaml", check_params=False)["method"]["name"] == "confident_peer"
    _forget_example(monkeypatch)
    capsys.readouterr()
    assert cli.main(argv) == 0  # rerun: the saved config (with its import) equals this one, so: already complete
    assert "already complete" in capsys.readouterr().out
    _forget_example(monkeypatch)
    assert cli.main(["evaluate", str(run_dir)]) == 0
    assert set(json.loads((run_dir / "evaluation.json").read_text())["scores"]) >= {"student_0", "ensemble"}


def _write(path, text):
    path.write_text(text)
    return path


BASE = """experiment: plugin_test
imports: {imports}
method: {{name: {method}}}
students: [simple_cnn, simple_cnn]
dataset: {{name: digits}}
optimizer: {{name: sgd, learning_rate: 0.05}}
epochs: 1
"""


PLUGIN = """import keras
import keras_okd


@keras_okd.methods.register("dml_t4_test", overwrite=True)
def dml_t4(students):
    \"\"\"DML at tau 4.\"\"\"
    return keras_okd.methods.dml(students, temperature=4.0)


@keras_okd.models.register("mlp_test", input_shape=(8, 8, 1), overwrite=True)
def mlp(num_classes=10, input_shape=(8, 8, 1), synchronized_bn=False):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.Flatten()(inputs)))
"""


def test_imports_are_relative_to_the_config_and_kept_absolute(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    _write(plugins / "dml_t4_plugin.py", PLUGIN)
    text = BASE.format(imports="[plugins/dml_t4_plugin.py, json]", method="dml_t4_test")
    path = _write(tmp_path / "c.yaml", text.replace("[simple_cnn, simple_cnn]", "[mlp_test, simple_cnn]"))
    resolved = load_config(path)
    assert resolved["imports"] == [str(plugins / "dml_t4_plugin.py"), "json"]
    assert resolved["students"] == ["mlp_test", "simple_cnn"]  # a model the plugin registers is a zoo name too
    assert list(resolved)[:3] == ["experiment", "paper", "imports"]
    assert config_from_dict({k: v for k, v in resolved.items() if k != "imports"})["imports"] == []


@pytest.mark.parametrize("plugin,imports,expected", [
    (None, "[missing.py]", ["c.yaml:2: imports.0: Plugin file 'missing.py' not found", "Give a .py file"]),
    (None, "[no_such_module_xyz]", ["c.yaml:2: imports.0: Plugin module 'no_such_module_xyz' cannot be imported"]),
    ("x = 1\nraise RuntimeError('boom in plugin')\n", "[bad.py]",
     ["c.yaml:2: imports.0: Plugin file 'bad.py'", "raised RuntimeError at line 2 of", "bad.py",
      "while being imported: boom in plugin"]),
    ("def broken(:\n", "[bad.py]", ["raised SyntaxError at line 1 of", "bad.py"]),
    ("import keras_okd\nkeras_okd.methods.register('tsb', lambda s: None)\n", "[bad.py]",
     ["raised ValueError at line 2", "A method named 'tsb' is already registered"]),
    (None, "bad.py", ["c.yaml:2: imports: expected a list of plugin files"]),
    (None, "[1]", ["c.yaml:2: imports: expected a list of plugin files"]),
])
def test_a_bad_plugin_is_a_config_error_naming_the_file_and_error(tmp_path, capsys, plugin, imports, expected):
    if plugin is not None:
        _write(tmp_path / "bad.py", plugin)
    path = _write(tmp_path / "c.yaml", BASE.format(imports=imports, method="dml"))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    for text in expected:
        assert text in str(error.value)
    assert cli.main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected[0] in err and "Traceback" not in err
    assert "bad.py" not in " ".join(sys.modules)  # a failed plugin leaves no half-imported module behind


def test_a_plugin_given_with_set_is_relative_to_the_current_folder(tmp_path, monkeypatch):
    _write(tmp_path / "here.py", "import keras_okd\nkeras_okd.methods.register('here_test', keras_okd.methods.dml, "
           "overwrite=True)\n")
    path = _write(tmp_path / "sub.yaml", BASE.format(imports="[]", method="here_test"))
    with pytest.raises(ConfigError, match="unknown method 'here_test'.*`imports:`"):
        load_config(path)
    monkeypatch.chdir(tmp_path)
    assert load_config(path, ["imports=[here.py]"])["imports"] == [str(tmp_path / "here.py")]


def test_load_plugin_loads_a_file_once_and_names_what_is_missing(tmp_path):
    plugin = _write(tmp_path / "counted.py", "import builtins\nbuiltins.counted_loads = "
                    "getattr(builtins, 'counted_loads', 0) + 1\n")
    import builtins

    first = load_plugin(str(plugin))
    assert load_plugin("counted.py", base_dir=str(tmp_path)) is first and builtins.counted_loads == 1
    del builtins.counted_loads
    with pytest.raises(PluginError, match="not found") as error:
        load_plugin("nope.py", base_dir=str(tmp_path))
    assert error.value.missing


def test_methods_lists_the_registry_with_plugins(capsys, monkeypatch):
    _forget_example(monkeypatch)
    assert cli.main(["methods", "--import", EXAMPLE_PY]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == keras_okd.methods.names() and "confident_peer" in names
    line = lines[names.index("confident_peer")]
    assert line.endswith("Online KD from the most confident peer.  [new_method]")
    assert lines[names.index("pcl")].split(None, 1)[1] == (
        "Peer ensemble + peer mean teacher on a multi-branch student (DKEL's Eq. 2-5).")
    assert cli.main(["methods", "--import", "missing_plugin.py"]) == 2
    assert "Plugin file 'missing_plugin.py' not found" in capsys.readouterr().err


def test_the_demo_takes_any_registered_method(monkeypatch, capsys):
    _forget_example(monkeypatch)
    seen = []
    monkeypatch.setattr(cli, "train_demo", lambda args: seen.append(args) or 0)
    assert cli.main(["train", "--import", EXAMPLE_PY, "--method", "confident_peer"]) == 0
    assert seen[-1].method == "confident_peer"
    for argv, message in [(["--method", "confident_pear"], "Unknown method 'confident_pear'"),
                          (["--method", "dml", "--warmup-epochs", "3"], "method 'dml' has no warm-up"),
                          (["--import", "nowhere.py"], "Plugin file 'nowhere.py' not found")]:
        with pytest.raises(SystemExit) as exit:
            cli.main(["train", *argv])
        assert exit.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--config", EXAMPLE_YAML, "--import", EXAMPLE_PY])
    assert "--import only apply to the demo" in capsys.readouterr().err


def test_the_demo_config_of_each_kind_of_method():
    args = cli._parser().parse_args(["train", "--dataset", "digits", "--students", "3", "--epochs", "4"])
    args.seed = 0
    tsb = cli._demo_config("tsb", args)
    assert tsb["students"] == ["simple_cnn"] * 3 and tsb["method"]["params"]["warmup_epochs"] == 5
    assert tsb["optimizer"] == {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
    one = cli._demo_config("one", args)
    assert one["students"] == {"model": "simple_cnn", "branches": 3, "per_branch_inputs": False}
    assert "warmup_epochs" not in one["method"]["params"]


def test_a_demo_method_that_refuses_the_demo_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "demo"
    assert cli.main(["train", "--method", "kd", "--run-dir", str(run_dir), "--verbose", "0"]) == 2
    err = capsys.readouterr().err
    assert "method 'kd' needs 'teacher'" in err and "Traceback" not in err
    assert not run_dir.exists()


def test_one_definition_of_strategies_and_of_the_step_schedule():
    assert config.STRATEGIES is distribute.STRATEGIES
    assert config.STRATEGY_BACKENDS == {"mirrored": "tensorflow", "multi_worker": "tensorflow",
                                        "jax_data_parallel": "jax"}
    train = next(a for a in cli._parser()._subparsers._group_actions[0].choices["train"]._actions
                 if a.dest == "strategy")
    assert tuple(train.choices) == distribute.STRATEGIES
    args = cli._parser().parse_args(["train", "--dataset", "digits", "--epochs", "40"])
    args.seed = 0
    demo = cli._demo_config("tsb", args)
    rate = learning_rate(demo["schedule"], 0.05, 40, steps_per_epoch=3)
    warmup = round(demo["schedule"]["warmup_epochs"] * 3)  # the demo's linear warm-up, in steps
    expected = [0.05 * 0.1 ** ((e >= 25) + (e >= 30) + (e >= 35)) * min(1, (3 * e + 3) / warmup) for e in range(40)]
    np.testing.assert_allclose([rate_at(rate, 3 * e + 2) for e in range(40)], expected, rtol=1e-6)
    assert demo["schedule"]["milestones"] == [25, 30, 35]


def test_installed_plugins_register_through_entry_points(tmp_path, monkeypatch):
    import importlib.metadata

    import keras_okd.registry

    _write(tmp_path / "okd_ep_plugin.py", "import keras_okd\nkeras_okd.methods.register('ep_method_test', "
           "keras_okd.methods.dml)\n")
    _write(tmp_path / "okd_ep_broken.py", "raise RuntimeError('broken install')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    group = keras_okd.registry.ENTRY_POINT_GROUP
    points = [importlib.metadata.EntryPoint(name=n, value=n, group=group) for n in ("okd_ep_plugin", "okd_ep_broken")]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [p for p in points if p.group == group])
    monkeypatch.setattr(keras_okd.registry, "_entry_points_loaded", [])
    path = _write(tmp_path / "c.yaml", BASE.format(imports="[]", method="ep_method_test"))
    with pytest.warns(UserWarning, match="okd_ep_broken.*RuntimeError.*broken install"):
        assert load_config(path)["method"]["name"] == "ep_method_test"
    assert "ep_method_test" in keras_okd.methods.names()
