"""Every file, folder and `keras_okd.` name that README.md cites exists (its commands: tests/test_readme_commands.py).

A path is a word that starts with one of the repository's top-level folders (`keras_okd/backend/`,
`benchmarks/bench_step.py`, ...); a name is a dotted `keras_okd.x.y` that must import as a module or resolve as an
attribute of one (`keras_okd.data.with_index`). The plugins' entry-point group, `keras_okd.plugins`, is a name of
package metadata, not a module.
"""

import importlib
import os
import re

import pytest

from keras_okd.registry import ENTRY_POINT_GROUP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ("keras_okd", "benchmarks", "configs", "examples", "tests", "scripts")
_PATH = re.compile(rf"(?<![\w./-])(?:{'|'.join(FOLDERS)})/[\w./-]*")
_NAME = re.compile(r"(?<![\w./-])keras_okd(?:\.[A-Za-z_]\w*)+")


def _readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def cited_paths(text):
    """The repository paths a text names, without a sentence's trailing dot."""
    return sorted({match.rstrip(".") for match in _PATH.findall(text)})


def cited_names(text):
    """The dotted `keras_okd.` names a text names."""
    return sorted(set(_NAME.findall(text)) - {ENTRY_POINT_GROUP})


def resolves(name):
    """Whether `name` imports as a module, or is an attribute (path) of the longest prefix that imports."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(value, attribute):
                return False
            value = getattr(value, attribute)
        return True
    return False


def test_the_readme_cites_paths_and_names():
    text = _readme()
    assert "keras_okd/backend/" in cited_paths(text) and len(cited_paths(text)) > 10
    assert "keras_okd.data.with_index" in cited_names(text)


def test_a_stale_path_or_name_is_caught():
    assert cited_paths("see `keras_okd/backend.py`.") == ["keras_okd/backend.py"]
    assert not os.path.exists(os.path.join(ROOT, "keras_okd/backend.py"))
    assert not resolves("keras_okd.no_such_module.Name") and not resolves("keras_okd.data.no_such_name")
    assert resolves("keras_okd.knowledge.PeerEnsemble")


@pytest.mark.parametrize("path", cited_paths(_readme()))
def test_every_path_the_readme_cites_exists(path):
    assert os.path.exists(os.path.join(ROOT, path)), f"README.md cites {path}, which is not in the repository"


@pytest.mark.parametrize("name", cited_names(_readme()))
def test_every_name_the_readme_cites_resolves(name):
    assert resolves(name), f"README.md cites {name}, which neither imports nor is an attribute of a keras_okd module"
