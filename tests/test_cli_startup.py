"""`keras-okd --help`, `keras-okd methods` and argument errors import no engine (Keras, TensorFlow, JAX, torch).

Each command runs in a fresh interpreter that then lists the engine modules it holds; the speed that follows from
this is measured by benchmarks/cli_startup.py, not here.
"""

import json
import os
import subprocess
import sys

import pytest

import keras_okd.methods
from keras_okd import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINES = ("keras", "tensorflow", "jax", "torch")

_PROBE = """
import contextlib, io, json, sys
from keras_okd import cli
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        code = cli.main(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
engines = sorted(m for m in sys.modules if m.split(".")[0] in {engines})
print(json.dumps({{"code": code, "out": out.getvalue(), "err": err.getvalue(), "engines": engines}}))
"""


def run_cli(*argv):
    """`keras-okd ARGV` in a fresh interpreter: `{"code", "out", "err", "engines"}` (engine modules it imported)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", _PROBE.format(engines=set(ENGINES)), *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"], ["methods"],
                                  ["train", "--epochs", "0"], ["train", "--no-such-flag"], ["evaluate"],
                                  ["train", "--config", "configs/digits/dml.yaml", "--strategy", "mirorred"]])
def test_help_methods_and_argument_errors_import_no_engine(argv):
    result = run_cli(*argv)
    assert result["engines"] == []
    if argv == ["methods"]:
        assert result["code"] == 0 and result["err"] == ""
        assert "tsb " in result["out"] and "dml " in result["out"]
    elif "--help" in argv:
        assert result["code"] == 0 and "usage: keras-okd" in result["out"]
    else:
        assert result["code"] == 2 and "error:" in result["err"]


def test_an_engine_is_imported_once_a_command_needs_it():
    result = run_cli("methods", "--import", "examples/new_method.py")
    assert result["code"] == 0 and "keras" in result["engines"]
    assert "new_method" in result["out"]


def test_methods_read_from_their_files_are_the_registered_ones():
    presets = cli.builtin_presets()
    assert sorted(presets) == sorted(keras_okd.methods._BUILTIN)
    for name, doc in presets.items():
        assert doc == keras_okd.methods.get(name).__doc__


def test_the_cli_names_the_strategies_that_distribute_has():
    from keras_okd import distribute

    assert cli.STRATEGY_NAMES == distribute.STRATEGIES


def test_an_unknown_strategy_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["train", "--config", "configs/digits/dml.yaml", "--strategy", "mirorred"])
    assert exit.value.code == 2
    assert "--strategy: invalid choice: 'mirorred' (choose from 'none', 'mirrored'" in capsys.readouterr().err
