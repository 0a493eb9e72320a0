import zipfile

import keras
import numpy as np
import pytest

import keras_okd
from keras_okd.experiments.runner import save_portable


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="synchronized batch norm exists on TensorFlow only")
def test_students_trained_with_synchronized_bn_are_saved_loadable_everywhere(tmp_path):
    model = keras_okd.models.get("simple_cnn", num_classes=10, width=4, synchronized_bn=True)
    assert any(getattr(layer, "synchronized", False) for layer in model.layers)
    path = tmp_path / "student.keras"
    save_portable(model, path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    assert '"synchronized": true' not in config and '"synchronized": false' in config
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype("float32")
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)), rtol=1e-6)


def test_config_accepts_the_strategies(tmp_path):
    from keras_okd.experiments import load_config

    for name in ("none", "mirrored", "multi_worker", "jax_data_parallel"):
        assert load_config("configs/digits/tsb.yaml", [f"strategy={name}"])["strategy"] == name
    with pytest.raises(Exception, match="strategy"):
        load_config("configs/digits/tsb.yaml", ["strategy=horovod"])


def test_cli_reads_the_strategy_before_validating_the_config(tmp_path):
    # Validation builds Keras optimizers (TensorFlow ops); a multi-worker strategy must exist before the first one.
    from keras_okd.cli import _strategy_before_validation

    path = tmp_path / "run.yaml"
    path.write_text("experiment: x\nstrategy: multi_worker\n")
    assert _strategy_before_validation(str(path), []) == "multi_worker"
    assert _strategy_before_validation(str(path), ["epochs=2", "strategy = mirrored"]) == "mirrored"
    path.write_text("experiment: x\n")
    assert _strategy_before_validation(str(path), []) == "none"
    assert _strategy_before_validation(str(tmp_path / "missing.yaml"), []) == "none"


def test_process_zero_writes_the_run_directory_and_the_others_a_hidden_copy(tmp_path, monkeypatch):
    from keras_okd.experiments import runner

    seen = {}

    def stop(run_dir, *_):
        seen["run_dir"] = run_dir
        raise RuntimeError("stop here")

    monkeypatch.setattr(runner, "_check_same_config", stop)
    config = keras_okd.experiments.load_config("configs/digits/tsb.yaml")
    for index, expected in ((0, tmp_path), (1, tmp_path / ".worker1")):
        monkeypatch.setattr(keras_okd.distribute, "process", lambda name, index=index: (index, 2))
        with pytest.raises(RuntimeError, match="stop here"):
            runner.run_experiment(config, tmp_path, seed=0)
        assert seen["run_dir"] == str(expected)
