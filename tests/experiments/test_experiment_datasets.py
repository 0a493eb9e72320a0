"""Dataset loaders by name (keras_okd.data.get): indices 0..N-1 once per epoch, shapes, and clear errors when the
data is not on disk. CIFAR and ImageNet run on tensorflow-datasets' mock data; TinyImageNet and image folders on small
files written here."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

import keras_okd
from keras_okd.data import DatasetNotFoundError


def epoch_indices(train):
    """Sorted-or-not list of the indices one pass over `train` yields, checking the batch structure."""
    seen = []
    for inputs, labels in train:
        assert set(inputs) == {"inputs", "index"}
        assert inputs["inputs"].shape[0] == labels.shape[0] == inputs["index"].shape[0]
        seen += inputs["index"].numpy().tolist()
    return seen


def assert_each_index_once_per_epoch(train, n, epochs=2):
    orders = []
    for _ in range(epochs):
        seen = epoch_indices(train)
        assert sorted(seen) == list(range(n))
        orders.append(seen)
    return orders


def save_image(path, size, rng, mode="RGB"):
    shape = (size[0], size[1], 3) if mode == "RGB" else (size[0], size[1])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)


def fake_tinyimagenet(root, classes=3, train_per_class=4, val_per_class=2, seed=0):
    """The official archive's layout: wnids.txt, train/<wnid>/images/*.JPEG, val/images + val_annotations.txt."""
    rng = np.random.default_rng(seed)
    base = root / "tiny-imagenet-200"
    wnids = [f"n0{k:07d}" for k in (3, 1, 2)][:classes]  # label order is wnids.txt order, not sorted order
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for c, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for k in range(train_per_class):
            save_image(folder / f"{wnid}_{k}.JPEG", (64, 64), rng, mode="L" if k == 0 else "RGB")  # some are gray
        for k in range(val_per_class):
            name = f"val_{c * val_per_class + k}.JPEG"
            save_image(base / "val" / "images" / name, (64, 64), rng)
            lines.append(f"{name}\t{wnid}\t0\t0\t10\t10")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return wnids


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_on_mock_data(name, classes):
    with tfds.testing.mock_data(num_examples=10):
        train, test, n = keras_okd.data.get(name, batch_size=4, seed=0)
        assert n == 10 and keras_okd.data.num_classes(name) == classes
        orders = assert_each_index_once_per_epoch(train, n)
        assert orders[0] != orders[1]  # reshuffled every epoch
        x, y = next(iter(test))
        assert x.shape[1:] == (32, 32, 3) and x.dtype == tf.float32 and int(tf.reduce_max(y)) < classes
        fixed, _, _ = keras_okd.data.get(name, batch_size=4, seed=0, shuffle=False)
        assert epoch_indices(fixed) == list(range(10))


def test_imagenet_on_mock_data():
    with tfds.testing.mock_data(num_examples=6):
        train, test, n = keras_okd.data.get("imagenet2012", batch_size=4, seed=0)
        assert n == 6 and keras_okd.data.num_classes("imagenet2012") == 1000
        assert_each_index_once_per_epoch(train, n)
        inputs, _ = next(iter(train))
        assert inputs["inputs"].shape[1:] == (224, 224, 3) and inputs["inputs"].dtype == tf.float32
        x, y = next(iter(test))
        assert x.shape[1:] == (224, 224, 3) and int(tf.reduce_max(y)) < 1000
        train, _, _ = keras_okd.data.get("imagenet2012", batch_size=3, augment=None, image_size=32, resize=40,
                                         test_resize="square")
        assert next(iter(train))[0]["inputs"].shape[1:] == (32, 32, 3)


def test_center_crop_keeps_the_aspect_ratio():
    image = np.zeros((300, 400, 3), np.uint8)
    image[:, 200:] = 255  # right half white
    encoded = tf.io.encode_jpeg(image)
    crop = keras_okd.data.imagenet.center_crop(encoded, resize=256, size=224).numpy()
    assert crop.shape == (224, 224, 3)
    # shorter side 300 -> 256, width 400 -> 341: the crop spans columns 58..282 of 341, the middle at 170.5
    assert crop[:, :100].mean() < 20 and crop[:, 130:].mean() > 235


def test_imagenet_missing_says_what_to_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        keras_okd.data.get("imagenet2012", data_dir=str(tmp_path / "tfds"))
    message = str(info.value)
    assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
    assert str(tmp_path / "tfds" / "downloads" / "manual") in message and "image-net.org" in message


def test_tinyimagenet_from_the_archive_layout(tmp_path):
    wnids = fake_tinyimagenet(tmp_path)
    for data_dir in (tmp_path, tmp_path / "tiny-imagenet-200"):  # the parent or the folder itself
        assert keras_okd.data.num_classes("tinyimagenet", data_dir=str(data_dir)) == 3
    train, val, n = keras_okd.data.get("tinyimagenet", data_dir=str(tmp_path), batch_size=5, seed=1)
    assert n == 12
    assert_each_index_once_per_epoch(train, n)
    inputs, _ = next(iter(train))
    assert inputs["inputs"].shape[1:] == (64, 64, 3) and inputs["inputs"].dtype == tf.float32
    labels = np.concatenate([y.numpy() for _, y in val])
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])  # val labels from val_annotations.txt
    paths, train_labels = keras_okd.data.tiny_imagenet.file_lists(str(tmp_path), "train")
    assert train_labels == [0] * 4 + [1] * 4 + [2] * 4
    assert all(f"/{wnids[label]}/images/" in path for path, label in zip(paths, train_labels))


def test_tinyimagenet_missing_says_what_to_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        keras_okd.data.get("tinyimagenet", data_dir=str(tmp_path))
    message = str(info.value)
    assert "tiny-imagenet-200.zip" in message and str(tmp_path / "tiny-imagenet-200" / "wnids.txt") in message
    (tmp_path / "tiny-imagenet-200").mkdir()
    (tmp_path / "tiny-imagenet-200" / "wnids.txt").write_text("n01\n")
    with pytest.raises(DatasetNotFoundError, match="incomplete archive"):
        keras_okd.data.get("tinyimagenet", data_dir=str(tmp_path))


def test_folder_with_train_and_test_sub_folders(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 2)):
        for cls in ("dog", "cat"):
            (tmp_path / split / cls).mkdir(parents=True)
            for k in range(count):
                save_image(tmp_path / split / cls / f"{k}.png", (12, 10), rng)
    train, test, n = keras_okd.data.get("folder", data_dir=str(tmp_path), batch_size=4, image_size=[8, 8],
                                        mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert n == 6 and keras_okd.data.num_classes("folder", data_dir=str(tmp_path)) == 2
    assert_each_index_once_per_epoch(train, n)
    labels = np.concatenate([y.numpy() for _, y in test])
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])  # classes sorted: cat = 0, dog = 1
    x, _ = next(iter(test))
    assert x.shape[1:] == (8, 8, 3) and float(tf.reduce_min(x)) < -1.0  # normalised


def test_folder_of_class_folders_is_split_per_class(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("a", "b", "c"):
        (tmp_path / cls).mkdir()
        for k in range(5):
            save_image(tmp_path / cls / f"{k}.jpg", (16, 16), rng)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    train, test, n = keras_okd.data.get("folder", data_dir=str(tmp_path), batch_size=3, validation_split=0.2)
    assert n == 12  # 4 per class train, 1 per class test
    assert_each_index_once_per_epoch(train, n)
    labels = np.concatenate([y.numpy() for _, y in test])
    np.testing.assert_array_equal(labels, [0, 1, 2])
    assert next(iter(train))[0]["inputs"].shape[1:] == (16, 16, 3)  # size of the first image
    again, _, _ = keras_okd.data.get("folder", data_dir=str(tmp_path), batch_size=3, shuffle=False)
    assert epoch_indices(again) == list(range(12))


def test_folder_missing_says_where_to_put_images(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"<class name>/<image files>"):
        keras_okd.data.get("folder", data_dir=str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="No class sub-folders"):
        keras_okd.data.get("folder", data_dir=str(tmp_path / "empty"))


def test_digits_by_name_keeps_the_split_fixed_across_seeds():
    (_, _), (xv, _) = keras_okd.data.digits_arrays()
    for seed in (0, 5):
        train, val, n = keras_okd.data.get("digits", batch_size=500, seed=seed)
        assert n == 1437
        assert_each_index_once_per_epoch(train, n, epochs=1)
        np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in val]), xv)
    shifted, _, _ = keras_okd.data.get("digits", batch_size=500, augment="shift")
    assert next(iter(shifted))[0]["inputs"].shape[1:] == (8, 8, 1)


def test_unknown_dataset_and_options():
    with pytest.raises(ValueError, match="Unknown dataset .svhn.; known: cifar10, cifar100, digits, fashion_mnist, "
                                         "fashion_mnist_1k, folder"):
        keras_okd.data.get("svhn")
    with pytest.raises(ValueError, match="augment must be None or 'shift'"):
        keras_okd.data.get("digits", augment="standard")
    assert keras_okd.data.names() == ["cifar10", "cifar100", "digits", "fashion_mnist", "fashion_mnist_1k", "folder",
                                      "imagenet2012", "mnist", "tinyimagenet"]
    assert os.path.basename(keras_okd.data.tiny_imagenet.default_data_dir()) == "datasets"
