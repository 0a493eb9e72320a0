"""Fashion-MNIST and MNIST from IDX files: the format reader's checks (on files written here byte by byte), the
lookup order (data_dir, Debian's folder, Keras's cache, Keras's download: replaced here, never the network), the
stratified subset rule, the pipelines, and the real Debian files when installed."""

import gzip
import os
import re
import struct

import keras
import numpy as np
import pytest

import keras_okd
from keras_okd.data import DatasetNotFoundError, IDXFormatError, read_idx, write_idx
from keras_okd.data import mnist_family
from conftest import tiny_student

DEBIAN = "/usr/share/datasets/fashion-mnist"


def idx_bytes(array, code=0x08, dtype=">u1"):
    """An IDX file written by hand: 0x0000, type code, ndim, big-endian uint32 sizes, big-endian data."""
    array = np.asarray(array)
    return bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + \
        array.astype(dtype).tobytes()


def write_bytes(path, data):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def fake_dataset(folder, label, n_train=30, n_test=10, gz=True, seed=0):
    """The four IDX files of a small MNIST-like dataset; every label is `label` (to tell copies apart), or None for
    labels 0..9 in turn."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    ext = ".gz" if gz else ""
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.full(n, label, np.uint8) if label is not None else (np.arange(n) % 10).astype(np.uint8)
        write_bytes(os.path.join(folder, f"{split}-images-idx3-ubyte{ext}"), idx_bytes(images))
        write_bytes(os.path.join(folder, f"{split}-labels-idx1-ubyte{ext}"), idx_bytes(labels))
        out[split] = (images, labels)
    return out


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Debian's folder and Keras's cache moved under tmp_path; Keras's download replaced by a stub that fails."""
    debian = tmp_path / "debian" / "fashion-mnist"
    monkeypatch.setitem(mnist_family._DATASETS["fashion_mnist"], "debian", str(debian))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    calls = []

    def offline(name):
        calls.append(name)
        raise OSError("URL fetch failure (stub: no network in tests)")

    monkeypatch.setattr(mnist_family, "_download", offline)
    return {"debian": str(debian), "cache": str(tmp_path / "keras" / "datasets"), "root": tmp_path,
            "downloads": calls}


# ---------------------------------------------------------------------------------------------------------- format
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_reads_hand_written_files(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("images-idx3-ubyte" + (".gz" if gz else ""))
    write_bytes(path, idx_bytes(images))
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, images)
    ints = np.array([[-3, 70000], [5, -1]], np.int32)
    write_bytes(tmp_path / "ints", idx_bytes(ints, code=0x0C, dtype=">i4"))
    np.testing.assert_array_equal(read_idx(tmp_path / "ints"), ints)  # big-endian decoded


def test_write_idx_writes_what_a_hand_written_file_holds(tmp_path):
    array = np.array([[1.5, -2.0], [0.25, 8.0]], np.float32)
    write_idx(tmp_path / "a.gz", array)
    with gzip.open(tmp_path / "a.gz", "rb") as f:
        assert f.read() == idx_bytes(array, code=0x0D, dtype=">f4")
    write_idx(tmp_path / "b", np.array([7, 8], np.uint8))
    assert (tmp_path / "b").read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 8])
    with pytest.raises(ValueError, match="IDX holds uint8.*got int64"):
        write_idx(tmp_path / "c", np.array([1], np.int64))


@pytest.mark.parametrize("gz", [True, False])
def test_bad_magic_number_names_the_file_and_the_bytes(tmp_path, gz):
    path = tmp_path / ("x.gz" if gz else "x")
    write_bytes(path, b"\x00\x01\x08\x03" + bytes(20))
    with pytest.raises(IDXFormatError, match=re.escape(str(path)) + ": bad magic number 0x00010803"):
        read_idx(path)
    write_bytes(path, b"\x00\x00\x07\x01" + bytes(8))  # unknown type code 0x07
    with pytest.raises(IDXFormatError, match="bad magic number 0x00000701"):
        read_idx(path)
    write_bytes(path, b"\x00\x00")
    with pytest.raises(IDXFormatError, match="2 bytes, shorter than the 4-byte IDX magic number"):
        read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_file_names_the_expected_and_found_sizes(tmp_path, gz):
    data = idx_bytes(np.zeros((3, 4, 4), np.uint8))
    path = tmp_path / ("x.gz" if gz else "x")
    write_bytes(path, data[:-8])
    with pytest.raises(IDXFormatError, match=re.escape(f"{path}: truncated: the header says shape (3, 4, 4) (48 "
                                                       "bytes of data), the file holds 40 bytes")):
        read_idx(path)
    write_bytes(path, data[:10])  # the header itself is cut
    with pytest.raises(IDXFormatError, match="truncated header: 3 dimensions need 16 bytes, the file has 10"):
        read_idx(path)
    write_bytes(path, data + b"\x01")
    with pytest.raises(IDXFormatError, match="1 bytes after the 48 bytes of data"):
        read_idx(path)


def test_cut_gzip_stream_is_a_clear_error(tmp_path):
    write_bytes(tmp_path / "full.gz", idx_bytes(np.arange(1000, dtype=np.uint8) % 7))
    data = (tmp_path / "full.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(IDXFormatError, match=r"cut\.gz: the gzip stream is damaged or cut short"):
        read_idx(tmp_path / "cut.gz")


def test_count_mismatch_names_both_files_and_counts(tmp_path):
    folder = tmp_path / "d"
    fake_dataset(folder, 1)
    write_bytes(folder / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(29, np.uint8)))
    images, labels = folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz"
    with pytest.raises(IDXFormatError, match=re.escape(f"count mismatch: {images} holds 30 images, {labels} holds "
                                                       "29 labels")):
        keras_okd.data.get("fashion_mnist", data_dir=str(folder))
    write_bytes(labels, idx_bytes(np.zeros((30, 1), np.uint8)))
    with pytest.raises(IDXFormatError, match=r"expected labels of shape \(count,\), got shape \(30, 1\)"):
        keras_okd.data.get("fashion_mnist", data_dir=str(folder))
    write_bytes(labels, idx_bytes(np.full(30, 10, np.uint8)))
    with pytest.raises(IDXFormatError, match=r"labels must be in \[0, 10\), got min 10, max 10"):
        keras_okd.data.get("fashion_mnist", data_dir=str(folder))
    write_bytes(labels, idx_bytes(np.zeros(30, np.uint8)))
    write_bytes(images, idx_bytes(np.zeros((30, 32, 32), np.uint8)))
    with pytest.raises(IDXFormatError, match=r"images of 28x28 pixels, got shape \(30, 32, 32\)"):
        keras_okd.data.get("fashion_mnist", data_dir=str(folder))


# ---------------------------------------------------------------------------------------------------------- lookup
def labels_read(name="fashion_mnist", **kwargs):
    (_, y), _ = mnist_family.load_raw(name, **kwargs)
    return set(y.tolist())


def test_lookup_order_data_dir_then_debian_then_keras_cache(places):
    fake_dataset(places["debian"], 1)
    fake_dataset(os.path.join(places["cache"], "fashion-mnist"), 2, gz=False)  # Keras's cache, unpacked files
    fake_dataset(places["root"] / "mine" / "fashion-mnist", 3)  # data_dir's sub-folder
    assert labels_read(data_dir=str(places["root"] / "mine")) == {3}
    assert labels_read() == {1}
    for f in os.listdir(places["debian"])[:1]:  # an incomplete copy is skipped
        os.remove(os.path.join(places["debian"], f))
    assert labels_read() == {2}
    assert places["downloads"] == []


def test_data_dir_without_the_files_is_an_error_not_a_fallback(places):
    fake_dataset(places["debian"], 1)
    (places["root"] / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="Fashion-MNIST not found in data_dir=.*empty"):
        labels_read(data_dir=str(places["root"] / "empty"))


def test_missing_everywhere_names_apt_get_and_keras(places):
    with pytest.raises(DatasetNotFoundError) as info:
        keras_okd.data.get("fashion_mnist", download=False)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "keras.datasets.fashion_mnist.load_data()" in message
    assert places["debian"] in message and "download=False" in message
    assert places["downloads"] == []
    with pytest.raises(DatasetNotFoundError, match="Keras could not download it \\(OSError: URL fetch failure") as info:
        keras_okd.data.get("fashion_mnist")
    assert places["downloads"] == ["fashion_mnist"] and "apt-get install dataset-fashion-mnist" in str(info.value)
    with pytest.raises(DatasetNotFoundError) as info:  # MNIST: no Debian package; Keras and data_dir
        keras_okd.data.get("mnist", download=False)
    assert "apt-get" not in str(info.value) and "keras.datasets.mnist.load_data()" in str(info.value)


def test_downloaded_arrays_and_keras_mnist_npz_are_used(places, monkeypatch):
    rng = np.random.default_rng(0)
    x, xt = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    y, yt = np.arange(20, dtype=np.uint8) % 10, np.arange(10, dtype=np.uint8)
    monkeypatch.setattr(mnist_family, "_download", lambda name: ((x, y), (xt, yt)))
    (x2, y2), (xt2, yt2) = mnist_family.load_raw("fashion_mnist")
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(yt2, yt)
    os.makedirs(places["cache"])
    np.savez(os.path.join(places["cache"], "mnist.npz"), x_train=x, y_train=y, x_test=xt, y_test=yt + 0)
    monkeypatch.setattr(mnist_family, "_download", None)  # the cache must be read without downloading
    (x3, _), (_, yt3) = mnist_family.load_raw("mnist")
    np.testing.assert_array_equal(x3, x)
    np.testing.assert_array_equal(yt3, yt)


# ---------------------------------------------------------------------------------------------------------- subset
def docstring_rule(labels, train_size, subset_seed):
    """Run the numpy rule exactly as the module docstring writes it."""
    code = re.search(r"reproduce it:\n\n(.*?)\n\n", mnist_family.__doc__, re.S).group(1)
    scope = {"np": np, "labels": labels, "train_size": train_size, "subset_seed": subset_seed}
    exec("\n".join(line[4:] for line in code.splitlines()), scope)
    return scope["indices"]


def test_stratified_subset_follows_the_documented_rule():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    rng.shuffle(labels)
    idx = keras_okd.data.stratified_subset(labels, 17, seed=3)
    # shares 8.5, 5.1, 2.55, 0.85 -> floors 8, 5, 2, 0, two left for the largest remainders (0.85, 0.55)
    assert np.bincount(labels[idx], minlength=4).tolist() == [8, 5, 3, 1]
    assert np.all(np.diff(idx) > 0) and len(idx) == 17
    np.testing.assert_array_equal(idx, docstring_rule(labels, 17, 3))
    np.testing.assert_array_equal(idx, keras_okd.data.stratified_subset(labels, 17, seed=3))
    assert not np.array_equal(idx, keras_okd.data.stratified_subset(labels, 17, seed=4))
    for bad in (0, 101, 2.5, True):
        with pytest.raises(ValueError, match=r"train_size must be an integer in \[1, 100\]"):
            keras_okd.data.stratified_subset(labels, bad)


# ---------------------------------------------------------------------------------------------------------- pipelines
def shifted_versions(image, padding, flip):
    """Every whole-pixel pad-and-crop of `image` (and its mirror image when `flip`)."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    crops = [padded[dy:dy + h, dx:dx + w] for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]
    return crops + ([c[:, ::-1] for c in crops] if flip else [])


@pytest.mark.parametrize("name, flip", [("fashion_mnist", True), ("mnist", False)])
def test_pipelines_scale_index_and_shift_by_whole_pixels(tmp_path, name, flip):
    raw = fake_dataset(tmp_path, None, n_train=40, n_test=12)
    train, test, n = keras_okd.data.get(name, data_dir=str(tmp_path), batch_size=16, seed=0, train_size=20)
    assert n == 20
    assert keras_okd.data.num_classes(name) == 10
    keep = keras_okd.data.stratified_subset(raw["train"][1], 20, 0)
    x = raw["train"][0][keep][..., None].astype(np.float32) / 255.0
    seen, flipped = [], 0
    for inputs, labels in train:
        for image, index, label in zip(inputs["inputs"].numpy(), inputs["index"].numpy(), labels.numpy()):
            assert image.dtype == np.float32 and image.shape == (28, 28, 1)
            assert label == raw["train"][1][keep][index]
            matches = [i for i, c in enumerate(shifted_versions(x[index], 2, True)) if np.array_equal(c, image)]
            assert matches, "not a whole-pixel pad-2 shift (or flip) of the sample its index names"
            flipped += min(matches) >= 25
            seen.append(int(index))
    assert sorted(seen) == list(range(20))
    assert (flipped > 0) == flip  # Fashion-MNIST flips some images; MNIST never
    images, labels = zip(*[(a.numpy(), b.numpy()) for a, b in test])
    np.testing.assert_array_equal(np.concatenate(images), raw["t10k"][0][..., None] / np.float32(255.0))
    np.testing.assert_array_equal(np.concatenate(labels), raw["t10k"][1])
    plain, _, _ = keras_okd.data.get(name, data_dir=str(tmp_path), batch_size=40, augment=None, shuffle=False)
    inputs, _ = next(iter(plain))
    np.testing.assert_array_equal(inputs["inputs"].numpy(), raw["train"][0][..., None] / np.float32(255.0))


def test_arrays_and_config_options(tmp_path):
    raw = fake_dataset(tmp_path, None)
    (x, y), (xt, yt) = keras_okd.data.fashion_mnist_arrays(data_dir=str(tmp_path), train_size=10)
    assert x.shape == (10, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
    assert sorted(y.tolist()) == list(range(10)) and xt.shape == (10, 28, 28, 1)
    assert float(x.max()) <= 1.0 and float(x.min()) >= 0.0
    np.testing.assert_array_equal(yt, raw["t10k"][1])
    with pytest.raises(ValueError, match="fashion_mnist: augment must be one of 'standard'"):
        keras_okd.data.get("fashion_mnist", data_dir=str(tmp_path), augment="flips")
    inverted, _, _ = keras_okd.data.get("fashion_mnist", data_dir=str(tmp_path), batch_size=30, shuffle=False,
                                        augment=lambda images: 1.0 - images)  # any callable on [0, 1] batches
    inputs, _ = next(iter(inverted))
    np.testing.assert_allclose(inputs["inputs"].numpy(), 1.0 - raw["train"][0][..., None] / np.float32(255.0),
                               atol=1e-7)
    from keras_okd.experiments.config import config_from_dict

    config = config_from_dict({"experiment": "x", "method": {"name": "dml"}, "students": ["simple_cnn", "simple_cnn"],
                               "dataset": {"name": "fashion_mnist", "train_size": 20_000},
                               "optimizer": {"name": "sgd"}, "epochs": 1})
    assert config["dataset"] == {"name": "fashion_mnist", "batch_size": 128, "data_dir": None, "download": True,
                                 "augment": "standard", "shuffle": True, "train_size": 20_000, "subset_seed": 0}


def test_distiller_trains_on_it(tmp_path):
    """The tf.data pipeline feeds every backend: one short epoch (2 steps) of two tiny students."""
    fake_dataset(tmp_path, None, n_train=32, n_test=8)
    train, _, n = keras_okd.data.get("fashion_mnist", data_dir=str(tmp_path), batch_size=16, seed=0)
    students = [tiny_student(input_shape=(28, 28, 1), width=2) for _ in range(2)]
    distiller = keras_okd.methods.dml(students)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    history = distiller.fit(train, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert 0.0 <= history.history["student_0_accuracy"][0] <= 1.0


# ---------------------------------------------------------------------------------------------------------- real files
@pytest.mark.skipif(not os.path.isfile(os.path.join(DEBIAN, "train-images-idx3-ubyte.gz")),
                    reason=f"Fashion-MNIST not installed in {DEBIAN} (apt-get install dataset-fashion-mnist)")
def test_real_debian_fashion_mnist():
    (x, y), (xt, yt) = mnist_family.load_raw("fashion_mnist", download=False)
    assert x.shape == (60_000, 28, 28) and xt.shape == (10_000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(yt).tolist() == [1000] * 10
    with gzip.open(os.path.join(DEBIAN, "t10k-images-idx3-ubyte.gz"), "rb") as f:  # what keras.datasets does
        np.testing.assert_array_equal(xt, np.frombuffer(f.read(), np.uint8, offset=16).reshape(10_000, 28, 28))
    with gzip.open(os.path.join(DEBIAN, "train-labels-idx1-ubyte.gz"), "rb") as f:
        np.testing.assert_array_equal(y, np.frombuffer(f.read(), np.uint8, offset=8))
    keep = keras_okd.data.stratified_subset(y, 20_000, 0)
    assert np.bincount(y[keep]).tolist() == [2000] * 10


def test_the_bundled_subset_is_the_full_sets_stratified_1000():
    from keras_okd.data.registry import FASHION_MNIST_1K

    (x, y), (xt, yt) = mnist_family.load_raw("fashion_mnist", FASHION_MNIST_1K, download=False)
    assert (x.shape, xt.shape, np.bincount(y).tolist()) == ((1000, 28, 28), (10000, 28, 28), [100] * 10)
    assert keras_okd.data.num_classes("fashion_mnist_1k") == 10
    if not os.path.isfile(os.path.join(mnist_family.DEBIAN_DIR, "train-images-idx3-ubyte.gz")):
        pytest.skip("Debian's dataset-fashion-mnist is not installed: the comparison with the full set needs it")
    (fx, fy), (fxt, fyt) = mnist_family.load_raw("fashion_mnist", mnist_family.DEBIAN_DIR, download=False)
    keep = keras_okd.data.stratified_subset(fy, 1000, 0)
    np.testing.assert_array_equal(x, fx[keep])
    np.testing.assert_array_equal(y, fy[keep])
    np.testing.assert_array_equal(xt, fxt)
    np.testing.assert_array_equal(yt, fyt)
