import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_okd


def test_with_index_numbers_samples_in_order_and_survives_shuffling():
    x = np.arange(10, dtype="float32").reshape(10, 1)
    ds = keras_okd.data.with_index(tf.data.Dataset.from_tensor_slices((x, np.arange(10))))
    ds = ds.shuffle(10, seed=1).batch(4)
    seen = []
    for inputs, y in ds:
        index = inputs["index"].numpy()
        np.testing.assert_array_equal(inputs["inputs"].numpy()[:, 0], index)  # index = position of the sample
        np.testing.assert_array_equal(y.numpy(), index)
        seen.extend(index.tolist())
    assert sorted(seen) == list(range(10)) and seen != list(range(10))


def test_with_index_refuses_batched_and_unpaired_data():
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((8, 2)), np.zeros(8))).batch(4)
    with pytest.raises(ValueError, match="before .batch"):
        keras_okd.data.with_index(ds)
    with pytest.raises(ValueError, match="pairs"):
        keras_okd.data.with_index(tf.data.Dataset.from_tensor_slices(np.zeros((4, 2))))


def test_digits_split_is_fixed_and_stratified():
    (x, y), (xv, yv) = keras_okd.data.digits_arrays()
    assert x.shape == (1437, 8, 8, 1) and xv.shape == (360, 8, 8, 1)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert np.bincount(yv).min() >= 35  # every class is in the validation split
    (x2, _), _ = keras_okd.data.digits_arrays()
    np.testing.assert_array_equal(x, x2)


def test_digits_pipeline_visits_each_index_once_per_epoch():
    train, val, n = keras_okd.data.get("digits", batch_size=100)
    for _ in range(2):
        seen = np.concatenate([inputs["index"].numpy() for inputs, _ in train])
        assert sorted(seen.tolist()) == list(range(n))
    assert sum(int(y.shape[0]) for _, y in val) == 360


def test_pad_crop_flip_yields_shifted_or_flipped_windows():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 6, 6, 2)).astype("float32")
    out = keras_okd.data.PadCropFlip(padding=2, seed=3)(images).numpy()
    assert out.shape == images.shape
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)])
    flips = 0
    for k in range(16):
        windows = [padded[k, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        plain = any(np.array_equal(out[k], w) for w in windows)
        flipped = any(np.array_equal(out[k], w[:, ::-1]) for w in windows)
        assert plain or flipped
        flips += flipped and not plain
    assert 0 < flips < 16


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_loader_on_mock_data(name, classes):
    with tfds.testing.mock_data(num_examples=12):
        train, test, n = keras_okd.data.get(name, batch_size=5, seed=0)
        assert n == 12
        seen = []
        for inputs, y in train:
            assert inputs["inputs"].shape[1:] == (32, 32, 3) and inputs["inputs"].dtype == tf.float32
            assert int(tf.reduce_max(y)) < classes
            seen.extend(inputs["index"].numpy().tolist())
        assert sorted(seen) == list(range(12))
        x, _ = next(iter(test))
        assert x.shape[1:] == (32, 32, 3)


def test_cifar_unknown_name():
    with pytest.raises(ValueError, match="cifar10"):
        keras_okd.data.load_cifar("cifar1000")


@pytest.fixture
def no_network(monkeypatch):
    """The machine as an offline one sees it: names do not resolve, connections are refused."""
    import socket

    def unresolvable(*args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    monkeypatch.setattr(socket.socket, "connect", unreachable)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)


def test_tfds_download_path_imports_and_reaches_the_network(no_network, monkeypatch, tmp_path):
    # tensorflow-datasets imports importlib_resources on its download path (declared by keras-okd for it): with the
    # network unreachable the download must fail on the network, not on an import.
    import requests
    import urllib3

    monkeypatch.setattr(urllib3.util.retry.Retry, "sleep", lambda self, response=None: None)  # its 10 retries
    builder = tfds.builder("cifar10", data_dir=str(tmp_path))
    with pytest.raises(requests.ConnectionError, match="www.cs.toronto.edu"):
        builder.download_and_prepare()


def test_cifar_offline_fails_before_tfds_tries_and_names_the_switch(no_network, monkeypatch, tmp_path):
    attempts = []
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", lambda self, **kw: attempts.append(kw))
    with pytest.raises(keras_okd.data.DatasetNotFoundError) as info:
        keras_okd.data.load_cifar("cifar10", data_dir=str(tmp_path))
    message = str(info.value)
    assert "www.cs.toronto.edu did not answer" in message and "Temporary failure in name resolution" in message
    assert "`download=False` skips the attempt" in message and "`data_dir=<its path>`" in message
    assert attempts == []  # tensorflow-datasets' own download (ten retries, minutes offline) never started
    cli = info.value.spelled(lambda name, value: f"`--set dataset.{name}={value}`")
    assert "`--set dataset.download=false` skips" in cli and "`--set dataset.data_dir=<its path>`" in cli


def test_cifar_without_download_says_so(tmp_path):
    with pytest.raises(keras_okd.data.DatasetNotFoundError, match=r"is not prepared in .* and `download=False`"):
        keras_okd.data.load_cifar("cifar100", "test", data_dir=str(tmp_path), download=False)


def test_cifar_names_a_missing_module_as_itself(monkeypatch, tmp_path):
    import keras_okd.data.cifar as cifar

    def broken_install(self, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources")

    monkeypatch.setattr(cifar, "_unreachable", lambda url: None)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", broken_install)
    with pytest.raises(ModuleNotFoundError, match="needs the module 'importlib_resources' to download cifar10, and "
                                                  "it is not installed") as info:
        keras_okd.data.load_cifar("cifar10", data_dir=str(tmp_path))
    assert info.value.name == "importlib_resources" and not isinstance(info.value, FileNotFoundError)
