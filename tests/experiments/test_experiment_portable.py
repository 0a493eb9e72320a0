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
