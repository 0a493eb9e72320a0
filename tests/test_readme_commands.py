"""Every command the README (and the examples' own headers) tells a user to type exists as written.

Each `keras-okd ...` and `python examples/...` line of README.md's code blocks, of the examples' docstrings and of
examples/*.yaml comments is parsed, not run: the `keras-okd` command goes through `keras_okd.cli.main` with the
commands that would train, evaluate or report replaced by a recorder (so subcommands, flags, their values and the
CLI's own checks after argparse all apply), a `--config` file must exist and load with its `--set` overrides, and an
example script's `main(argv)` must get past its argparse. Nothing trains.
"""

import argparse
import glob
import importlib.util
import os
import re
import shlex

import pytest

from keras_okd import cli
from keras_okd.experiments import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_COMMAND = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:keras-okd|python examples/)")


def _code_block_lines(text):
    """Lines inside the ``` fences of a Markdown text."""
    inside = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            yield line


def _commands_in(lines):
    """`keras-okd` and `python examples/` commands among `lines` (`#` comment marks before them and trailing
    comments removed, `a && b` split), as token lists without the leading environment assignments."""
    for line in lines:
        line = line.strip().lstrip("#").strip()
        for part in line.split("&&"):
            part = part.strip()
            if not _COMMAND.match(part):
                continue
            tokens = shlex.split(part, comments=True)
            while tokens and _ENV.match(tokens[0]):
                tokens.pop(0)
            yield tokens


def documented_commands():
    """`(where, tokens)` for every command of README.md, the examples' docstrings and examples/*.yaml comments."""
    found = []
    with open(os.path.join(ROOT, "README.md")) as f:
        found += [("README.md", c) for c in _commands_in(_code_block_lines(f.read()))]
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "*.py"))):
        with open(path) as f:
            docstring = f.read().split('"""')[1]
        found += [(os.path.relpath(path, ROOT), c) for c in _commands_in(docstring.splitlines())]
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "*.yaml"))):
        with open(path) as f:
            comments = [line for line in f if line.lstrip().startswith("#")]
        found += [(os.path.relpath(path, ROOT), c) for c in _commands_in(comments)]
    return found


class _Parsed(Exception):
    """Raised in place of running an example once its arguments parsed."""


def check_command(tokens, monkeypatch):
    """Parse one documented command as the CLI or the example script would; raise AssertionError if it does not
    exist as written. Run from the repository root, as the README's commands are."""
    monkeypatch.chdir(ROOT)
    if tokens[0] == "keras-okd":
        seen = []
        for name in ("train_config", "train_demo", "evaluate_runs", "report_runs"):
            monkeypatch.setattr(cli, name, lambda args, name=name: seen.append((name, args)) or 0)
        try:
            status = cli.main(tokens[1:])
        except SystemExit as exit:
            raise AssertionError(f"{shlex.join(tokens)}: the CLI refuses it (exit {exit.code})") from None
        assert status == 0, f"{shlex.join(tokens)}: exit status {status}"
        for name, args in seen:
            if name == "train_config":
                assert os.path.isfile(args.config), f"{shlex.join(tokens)}: no config file {args.config}"
                overrides = args.overrides + ([f"strategy={args.strategy}"] if args.strategy else [])
                load_config(args.config, overrides)  # the file and its --set overrides check
        return
    assert tokens[0] == "python", tokens
    script = tokens[1]
    assert os.path.isfile(script), f"{shlex.join(tokens)}: no file {script}"
    spec = importlib.util.spec_from_file_location(f"readme_{os.path.basename(script)[:-3]}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    try:
        module.main(tokens[2:])
    except SystemExit as exit:
        raise AssertionError(f"{shlex.join(tokens)}: its argparse refuses it (exit {exit.code})") from None
    except _Parsed:
        return
    raise AssertionError(f"{shlex.join(tokens)}: main() returned without parsing arguments")


COMMANDS = documented_commands()


def test_the_documents_hold_commands():
    kinds = {tokens[0] for _, tokens in COMMANDS}
    assert len(COMMANDS) >= 15 and kinds == {"keras-okd", "python"}, COMMANDS


@pytest.mark.parametrize("where,tokens", COMMANDS, ids=[f"{w}: {shlex.join(t)}" for w, t in COMMANDS])
def test_documented_command_exists_as_written(where, tokens, monkeypatch):
    check_command(tokens, monkeypatch)


@pytest.mark.parametrize("line,problem", [
    ("keras-okd train --config configs/tsb/table1_cifar100_resnet32.yaml", "no config file"),
    ("keras-okd train --config configs/digits/tsb.yaml --set epochz=3", "epochz"),
    ("keras-okd trian", "refuses"),
    ("keras-okd train --config configs/digits/tsb.yaml --epochs 3", "refuses"),
    ("keras-okd train --method no_such_method", "refuses"),
    ("python examples/quickstart_numpy.py --no-such-flag", "argparse refuses"),
    ("python examples/no_such_example.py", "no file"),
])
def test_a_wrong_command_is_caught(line, problem, monkeypatch):
    (tokens,) = list(_commands_in([line]))
    with pytest.raises(Exception, match=problem):
        check_command(tokens, monkeypatch)


def test_commands_are_found_in_comments_and_chains():
    lines = ["pip install -e . && keras-okd train", "#   KERAS_BACKEND=jax python examples/x.py --smoke  # tiny",
             "keras-okd report runs/  # a comment", "python benchmarks/bench_step.py"]
    assert list(_commands_in(lines)) == [["keras-okd", "train"], ["python", "examples/x.py", "--smoke"],
                                         ["keras-okd", "report", "runs/"]]
