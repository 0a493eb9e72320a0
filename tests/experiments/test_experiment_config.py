"""Experiment configs: errors name the key and the file line (or the --set), overrides, every shipped config."""

import glob
import os
import subprocess
import sys
import warnings

import pytest

import keras_okd
from keras_okd.experiments import ConfigError, config_from_dict, dump_config, load_config
from keras_okd.experiments.config import parse_value

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))

GOOD = """\
experiment: unit_tsb
paper: "unit test"
method:
  name: tsb
  params: {beta: 0.8, warmup_epochs: 1}
students: [simple_cnn, simple_cnn]
dataset: {name: digits, batch_size: 64}
optimizer: {name: sgd, learning_rate: 0.05, momentum: 0.9, weight_decay: 5e-4}
schedule: {type: step, milestones: [3, 4], factor: 0.1}
epochs: 5
seeds: [0, 1]
"""


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def errors_of(path, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value.errors


def test_a_good_config_resolves_with_defaults(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config["method"]["params"]["beta"] == 0.8 and config["method"]["params"]["temperature"] == 4.0
    assert config["optimizer"]["weight_decay"] == 5e-4  # "5e-4" is a float here, not PyYAML's string
    assert config["dataset"] == {"name": "digits", "batch_size": 64, "validation_size": 360, "split_seed": 0,
                                 "augment": None, "shuffle": True}
    assert config["strategy"] == "none" and config["seeds"] == [0, 1]
    # The resolved config round-trips through config.yaml.
    again = load_config(write(tmp_path, dump_config(config), "resolved.yaml"))
    assert again == config


@pytest.mark.parametrize(
    "old, new, key, line",
    [
        ("epochs: 5", "epochs: 5\nepochz: 3", "epochz", 11),
        ("params: {beta: 0.8, warmup_epochs: 1}", "params: {beta: 0.8, bta: 1}", "method.params.bta", 5),
        ("batch_size: 64}", "batch_size: 64, data_dir: /x}", "dataset.data_dir", 7),
        ("momentum: 0.9,", "momentun: 0.9,", "optimizer.momentun", 8),
        ("factor: 0.1}", "factor: 0.1, gamma: 2}", "schedule.gamma", 9),
    ],
)
def test_unknown_keys_name_the_key_and_the_line(tmp_path, old, new, key, line):
    path = write(tmp_path, GOOD.replace(old, new))
    errors = errors_of(path)
    assert len(errors) == 1
    assert errors[0].startswith(f"{path}:{line}: {key}: unknown key")


def test_unknown_key_suggests_the_close_one(tmp_path):
    errors = errors_of(write(tmp_path, GOOD.replace("momentum: 0.9,", "momentun: 0.9,")))
    assert "did you mean 'momentum'" in errors[0] and "nesterov" in errors[0]


@pytest.mark.parametrize(
    "old, new, key, line, expected",
    [
        ("epochs: 5", "epochs: five", "epochs", 10, "an integer"),
        ("beta: 0.8", "beta: high", "method.params.beta", 5, "a number"),
        ("warmup_epochs: 1", "warmup_epochs: 1.5", "method.params.warmup_epochs", 5, "an integer"),
        ("batch_size: 64", "batch_size: '64'", "dataset.batch_size", 7, "quoted number"),
        ("seeds: [0, 1]", "seeds: [0, x]", "seeds.1", 11, "an integer"),
        ("students: [simple_cnn, simple_cnn]", "students: [simple_cnn, 3]", "students.1", 6, "a string"),
        ("learning_rate: 0.05", "learning_rate: true", "optimizer.learning_rate", 8, "a number"),
    ],
)
def test_wrong_types_name_the_key_and_the_line(tmp_path, old, new, key, line, expected):
    path = write(tmp_path, GOOD.replace(old, new))
    errors = errors_of(path)
    assert errors[0].startswith(f"{path}:{line}: {key}: expected"), errors
    assert expected in errors[0]


def test_every_problem_is_listed_at_once(tmp_path):
    text = GOOD.replace("epochs: 5", "epochs: 0").replace("name: tsb", "name: tsb\n  extra: 1").replace(
        "[simple_cnn, simple_cnn]", "[simple_cnn, no_such_net]")
    errors = errors_of(write(tmp_path, text))
    assert any("epochs: must be >= 1" in e for e in errors)
    assert any("method.extra: unknown key" in e for e in errors)
    assert any("students.1: Unknown model 'no_such_net'" in e for e in errors)


def test_other_checks(tmp_path):
    def error(old, new):
        return " ".join(errors_of(write(tmp_path, GOOD.replace(old, new))))

    assert "missing required key 'epochs'" in error("epochs: 5\n", "")
    assert "2 or more students" in error("[simple_cnn, simple_cnn]", "[simple_cnn]")
    assert "unknown dataset 'svhn'" in error("name: digits", "name: svhn")
    assert "seeds: is the run's seed" in error("batch_size: 64}", "batch_size: 64, seed: 3}").replace(
        "dataset.seed", "seeds")
    assert "not a Keras optimizer" in error("name: sgd", "name: sgdd")
    assert "increasing" in error("[3, 4]", "[4, 3]")
    assert "is not a strategy" in error("seeds: [0, 1]", "seeds: [0, 1]\nstrategy: horovod")
    assert "is set by the runner" in error("beta: 0.8,", "beta: 0.8, num_train_samples: 5,")
    assert "letters, digits" in error("experiment: unit_tsb", "experiment: unit tsb/1")
    assert "method.params.views: unknown key" in error("warmup_epochs: 1}", "warmup_epochs: 1, views: x}")
    assert "students: {model: simple_cnn, branches: 2}" in error("name: tsb\n  params: {beta: 0.8, warmup_epochs: 1}",
                                                                  "name: pcl")
    path = write(tmp_path, "experiment: [unclosed\n")
    assert errors_of(path)[0].startswith(f"{path}:2: not valid YAML")


def test_overrides(tmp_path):
    path = write(tmp_path, GOOD)
    config = load_config(path, ["method.params.beta=0.5", "epochs=7", "students.1=resnet20",
                                "dataset.augment=shift", "seeds=[3]", "optimizer.nesterov=true"])
    assert config["method"]["params"]["beta"] == 0.5 and config["epochs"] == 7
    assert config["students"] == ["simple_cnn", "resnet20"] and config["seeds"] == [3]
    assert config["dataset"]["augment"] == "shift" and config["optimizer"]["nesterov"] is True
    replaced = load_config(path, ["method={name: dml}", "students={model: simple_cnn, branches: 2}"])
    assert replaced["method"] == {"name": "dml", "params": {"temperature": 1.0, "weight": 1.0, "reduction": "mean",
                                                           "features": None}}
    assert replaced["students"] == {"model": "simple_cnn", "branches": 2, "per_branch_inputs": False}


def test_override_errors_name_the_override(tmp_path):
    path = write(tmp_path, GOOD)
    errors = errors_of(path, ["method.params.bta=0.5"])
    assert errors[0].startswith("--set method.params.bta=0.5: method.params.bta: unknown key")
    assert errors_of(path, ["epochs=many"])[0].startswith("--set epochs=many: epochs: expected an integer")
    assert "not a position" in errors_of(path, ["students.5=resnet20"])[0]
    assert "expected key=value" in errors_of(path, ["epochs"])[0]


def test_parse_value_reads_yaml_scalars():
    assert parse_value("5e-4") == 5e-4 and parse_value("3") == 3 and parse_value("true") is True
    assert parse_value("null") is None and parse_value("abc") == "abc" and parse_value("[1, 2]") == [1, 2]


def test_an_unknown_method_is_an_error_naming_the_known_ones(tmp_path):
    path = write(tmp_path, GOOD.replace("name: tsb", "name: tsbb"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"{path}:4: method.name: unknown method 'tsbb' (did you mean 'tsb'?); known: " in message
    assert all(name in message for name in keras_okd.methods.names())


def test_branch_student_inputs_follow_the_views():
    base = config_from_dict({"experiment": "x", "method": {"name": "dkel", "params": {"views": "standard"}},
                             "students": {"model": "simple_cnn"}, "dataset": {"name": "digits"},
                             "optimizer": {"name": "sgd"}, "epochs": 1})
    assert base["students"] == {"model": "simple_cnn", "branches": 3, "per_branch_inputs": True}
    one = config_from_dict(base, ["method={name: one}", "students.per_branch_inputs=null"])
    assert one["students"]["per_branch_inputs"] is False
    with pytest.raises(ConfigError, match="method.params.views: per-peer views"):
        config_from_dict(base, ["method.params.views=rotate"])
    with pytest.warns(UserWarning, match="augmented twice"):
        config_from_dict(base, ["dataset.augment=shift"])


@pytest.mark.parametrize("path", SHIPPED, ids=[os.path.relpath(p, ROOT) for p in SHIPPED])
def test_every_shipped_config_validates(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import yaml

        with open(path) as f:
            method = yaml.safe_load(f)["method"]["name"]
    if method not in keras_okd.methods.names():
        pytest.skip(f"method {method!r} is not implemented yet (keras_okd.methods.names())")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "augmented twice" or unknown-method warning either
        config = load_config(path)
    assert config["strategy"] == "none" and config["epochs"] >= 1


def test_shipped_configs_are_what_the_generator_writes():
    assert len(SHIPPED) > 100
    result = subprocess.run([sys.executable, os.path.join(ROOT, "configs", "generate.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
