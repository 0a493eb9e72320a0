"""`.keras` round trips of single networks, multi-branch students and extracted branches,
including loading in a fresh process that never imports keras_okd."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_okd import models


def _images(batch=2, shape=(32, 32, 3), seed=0):
    return np.random.default_rng(seed).uniform(size=(batch, *shape)).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def student():
    return models.multi_branch("resnet20", num_branches=2, num_classes=10)


def test_single_network_round_trip(tmp_path):
    model = models.get("resnet20", num_classes=10)
    x = _images()
    path = tmp_path / "resnet20.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.name == "resnet20"
    np.testing.assert_array_equal(_np(model(x, training=False)), _np(loaded(x, training=False)))


def test_multi_branch_round_trip(tmp_path, student):
    x = _images(seed=1)
    path = tmp_path / "student.keras"
    student.save(path)
    loaded = keras.saving.load_model(path)
    before, after = student(x, training=False), loaded(x, training=False)
    assert set(after) == {"logits", "features", "shared_features"}
    for key in ("logits", "features"):
        assert len(after[key]) == 2
        for a, b in zip(before[key], after[key]):
            np.testing.assert_array_equal(_np(a), _np(b))
    np.testing.assert_array_equal(_np(before["shared_features"]), _np(after["shared_features"]))
    # A loaded student still yields branches.
    np.testing.assert_array_equal(
        _np(models.extract_branch(loaded, 1)(x, training=False)), _np(after["logits"][1])
    )


def test_per_branch_inputs_round_trip(tmp_path):
    model = models.multi_branch("simple_cnn", num_branches=2, num_classes=3, per_branch_inputs=True)
    views = [_images(shape=(8, 8, 1), seed=s) for s in (2, 3)]
    path = tmp_path / "views.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(model(views, training=False)["logits"], loaded(views, training=False)["logits"]):
        np.testing.assert_array_equal(_np(a), _np(b))


LOADER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    x = np.load(sys.argv[1])
    for path, expected in zip(sys.argv[2::2], sys.argv[3::2]):
        model = keras.saving.load_model(path)
        got = keras.ops.convert_to_numpy(model(x, training=False))
        np.testing.assert_allclose(got, np.load(expected), rtol=1e-5, atol=1e-5)
    assert not any(m == "keras_okd" or m.startswith("keras_okd.") for m in sys.modules)
    print("LOADED_WITHOUT_KERAS_OKD", keras.backend.backend())
    """
)


@pytest.mark.heavy
def test_saved_networks_load_without_keras_okd(tmp_path, student):
    x = _images(seed=4)
    np.save(tmp_path / "x.npy", x)
    args = []
    for label, model in (
        ("single", models.get("resnet20", num_classes=10)),
        ("branch", models.extract_branch(student, 0)),
    ):
        path, expected = tmp_path / f"{label}.keras", tmp_path / f"{label}.npy"
        model.save(path)
        np.save(expected, _np(model(x, training=False)))
        args += [str(path), str(expected)]
    script = tmp_path / "load.py"
    script.write_text(LOADER)
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    # Run outside the repository so keras_okd is not importable by accident.
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "x.npy"), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED_WITHOUT_KERAS_OKD" in result.stdout
