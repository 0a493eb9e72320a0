"""Files saved by an earlier version still load and compute what they computed then (tests/data/saved_run/).

`tests/data/make_saved_run.py` wrote the fixture (a three-epoch tsb run of two `simple_cnn_8` on 400 digits: the run
directory, its last backup, the whole distiller as a `.keras` file, and what each computed on 16 images). Every
refactor of the distiller, the knowledge parts, the presets, the zoo or the run directory is held against it: a
renamed variable, a changed `get_config` or a moved serialisable class breaks one of these tests. The files were
written on one backend; these tests run on every backend (float32 sums in another order: 1e-5).
"""

import pathlib
import shutil

import keras
import numpy as np
import pytest

import keras_okd
from keras_okd.experiments import evaluate_run, load_config, run_experiment
from keras_okd.experiments.runner import build_distiller
from keras_okd.experiments.state import RunCheckpoint

SAVED = pathlib.Path(__file__).parent / "data" / "saved_run"
EXPECTED = dict(np.load(SAVED / "expected.npz"))
X = EXPECTED["x"]
TOLERANCE = dict(rtol=1e-5, atol=1e-5)
TRAIN_SAMPLES = 400


def to_numpy(value):
    return keras.ops.convert_to_numpy(value)


@pytest.mark.parametrize("name", ["student_0", "student_1", "ensemble"])
def test_saved_models_of_the_run_predict_as_when_saved(name):
    model = keras.saving.load_model(SAVED / "run" / f"{name}.keras")
    np.testing.assert_allclose(to_numpy(model(X, training=False)), EXPECTED[name], **TOLERANCE)


def test_saved_distiller_file_loads_with_its_parts_state_and_predictions():
    distiller = keras.saving.load_model(SAVED / "distiller.keras")
    assert isinstance(distiller, keras_okd.OnlineDistiller)
    assert [part.name for part in distiller.knowledge] == ["ta", "si"]
    np.testing.assert_array_equal(to_numpy(distiller.knowledge[0].bank), EXPECTED["bank"])
    np.testing.assert_array_equal(to_numpy(distiller.knowledge[0].counts), EXPECTED["counts"])
    np.testing.assert_allclose(distiller.predict(X, verbose=0), EXPECTED["distiller"], **TOLERANCE)


def test_saved_backup_restores_into_the_distiller_its_config_builds():
    """On the backend that wrote it (jax) the backup restores; on another a resume is refused, naming the backend
    (a resume continues only the setup that wrote the backup)."""
    config = load_config(SAVED / "run" / "config.yaml", check_params=False)
    distiller, _ = build_distiller(config, TRAIN_SAMPLES, 10, (8, 8, 1))
    distiller(np.zeros((1, 8, 8, 1), "float32"))
    checkpoint = RunCheckpoint(str(SAVED / "backup"), verbose=0)
    checkpoint.set_model(distiller)
    if keras.backend.backend() != "jax":
        with pytest.raises(keras_okd.experiments.ResumeMismatchError, match="backend: 'jax' in the backup"):
            checkpoint.on_train_begin()
        return
    checkpoint.on_train_begin()
    assert checkpoint.problems == [] and checkpoint.restored["epoch"] == 3
    assert distiller._initial_epoch == 3  # fit goes on after the saved epoch
    np.testing.assert_array_equal(to_numpy(distiller.knowledge[0].bank), EXPECTED["bank"])
    np.testing.assert_array_equal(to_numpy(distiller.knowledge[0].counts), EXPECTED["counts"])
    np.testing.assert_allclose(distiller.predict(X, verbose=0), EXPECTED["distiller"], **TOLERANCE)


@pytest.mark.heavy
def test_saved_run_is_scored_as_its_results_say(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(SAVED / "run", run_dir)
    results = keras_okd.experiments.state.read_json(run_dir / "results.json")[0]
    scores = evaluate_run(str(run_dir))["scores"]
    assert scores["ensemble"]["matches_peers"]
    # The run's own validation pass and this one compute the same argmax of the same weights (1,397 images).
    np.testing.assert_allclose([scores[f"student_{i}"]["accuracy"] for i in range(2)], results["net_accuracy"],
                               atol=1e-6)
    np.testing.assert_allclose(scores["ensemble"]["accuracy"], results["ensemble_accuracy"], atol=1e-6)


@pytest.mark.heavy("jax")  # the backend that wrote the backup: another refuses to resume it
def test_interrupted_run_with_a_saved_backup_finishes_with_the_saved_weights(tmp_path):
    """A run killed after its last epoch's backup: the runner restores it, trains nothing more and saves the models."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("config.yaml", "history.csv"):
        shutil.copy2(SAVED / "run" / name, run_dir / name)
    shutil.copytree(SAVED / "backup", run_dir / "backup")
    config = load_config(run_dir / "config.yaml", check_params=False)
    results = run_experiment(config, str(run_dir), seed=0, verbose=0)
    assert results["epochs"] == 3 and len(keras_okd.experiments.read_history(str(run_dir / "history.csv"))) == 3
    for name in ("student_0", "student_1", "ensemble"):
        model = keras.saving.load_model(run_dir / f"{name}.keras")
        np.testing.assert_allclose(to_numpy(model(X, training=False)), EXPECTED[name], **TOLERANCE)


@pytest.mark.heavy
def test_saved_distiller_loads_after_import_keras_and_import_keras_okd_alone():
    """`import keras_okd` is lazy, but with Keras loaded it registers the distiller's classes for `load_model`."""
    import os
    import subprocess
    import sys

    root = str(SAVED.parents[2])
    code = ("import keras, keras_okd, sys; d = keras.saving.load_model(sys.argv[1]); "
            "print(type(d).__name__, [p.name for p in d.knowledge])")
    done = subprocess.run([sys.executable, "-c", code, str(SAVED / "distiller.keras")], cwd=root, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "OnlineDistiller ['ta', 'si']"
