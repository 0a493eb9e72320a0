"""Any folder of class sub-folders as an indexed dataset.

Two layouts are understood:

    data_dir/train/<class>/*.jpg  and  data_dir/test/<class>/*.jpg   (or val/ or validation/ for the test split)
    data_dir/<class>/*.jpg                                          (split here: `validation_split` of each class)

Class ids are the class folder names sorted alphabetically (as `keras.utils.image_dataset_from_directory` numbers
them); files are read in sorted order, so every sample keeps its index in every epoch. Images are jpeg, png, bmp or
gif; they are resized to `image_size` (default: the size of the first training image).
"""

import os

import numpy as np

from keras_okd.data.images import (
    DatasetNotFoundError,
    ImageTransform,
    augment_options,
    files_dataset,
    image_size_of,
    list_images,
    transformed,
)
from keras_okd.data.indexing import pipeline

TEST_FOLDERS = ("test", "val", "validation")


def _class_folders(folder):
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))


def _layout(data_dir):
    """`(train folder, test folder or None)`."""
    data_dir = os.path.expanduser(str(data_dir))
    if not os.path.isdir(data_dir):
        raise DatasetNotFoundError(
            f"No image folder at {data_dir!r}. Put the images there as {data_dir}/<class name>/<image files> (the "
            f"test split is then taken from each class), or as {data_dir}/train/<class name>/... and "
            f"{data_dir}/test/<class name>/...; jpeg, png, bmp or gif files."
        )
    train = os.path.join(data_dir, "train")
    if os.path.isdir(train):
        for name in TEST_FOLDERS:
            if os.path.isdir(os.path.join(data_dir, name)):
                return train, os.path.join(data_dir, name)
    return data_dir, None


def class_names(data_dir):
    """The class folder names in label order (sorted)."""
    train, _ = _layout(data_dir)
    names = _class_folders(train)
    if not names:
        raise DatasetNotFoundError(
            f"No class sub-folders in {train!r}: expected {train}/<class name>/<image files>."
        )
    return names


def _files(folder, classes):
    paths, labels = [], []
    for label, name in enumerate(classes):
        sub = os.path.join(folder, name)
        files = list_images(sub) if os.path.isdir(sub) else []
        paths += files
        labels += [label] * len(files)
    return paths, labels


def file_lists(data_dir, validation_split=0.2, split_seed=0):
    """`((train paths, train labels), (test paths, test labels), class names)` in their fixed order.

    With a `train/` + `test/` layout the folders are used as they are; otherwise each class's sorted files are
    split with a seeded permutation, `validation_split` of them (at least one) going to the test split.

    Raises:
        DatasetNotFoundError: the folder or its images are missing.
        ValueError: the test folder has a class the training folder lacks, or `validation_split` is not in (0, 1).
    """
    train_dir, test_dir = _layout(data_dir)
    classes = class_names(data_dir)
    if test_dir is not None:
        extra = sorted(set(_class_folders(test_dir)) - set(classes))
        if extra:
            raise ValueError(f"{test_dir} has class folders {extra} that {train_dir} lacks.")
        train, test = _files(train_dir, classes), _files(test_dir, classes)
    else:
        if not 0.0 < float(validation_split) < 1.0:
            raise ValueError(
                f"{train_dir} has no train/ and test/ sub-folders, so the test split is taken from each class: "
                f"validation_split must be in (0, 1), got {validation_split}."
            )
        rng = np.random.default_rng(split_seed)
        train, test = ([], []), ([], [])
        for label, name in enumerate(classes):
            files = list_images(os.path.join(train_dir, name))
            held = max(1, int(round(len(files) * float(validation_split)))) if len(files) > 1 else 0
            order = rng.permutation(len(files))
            held_out = set(order[:held].tolist())
            for k, path in enumerate(files):
                part = test if k in held_out else train
                part[0].append(path)
                part[1].append(label)
    if not train[0]:
        raise DatasetNotFoundError(f"No image files (jpeg, png, bmp, gif) in the class folders of {train_dir!r}.")
    return train, test, classes


def load_image_folder(data_dir, split="train", image_size=None, channels=3, validation_split=0.2, split_seed=0):
    """One split of an image folder as an unbatched `(uint8 image, int64 label)` dataset in its fixed order.

    Args:
        data_dir: the folder (see the module docstring for the layouts).
        split: `"train"` or `"test"`.
        image_size: `(height, width)`; default the first training image's size.
        channels: 3 or 1.
        validation_split: fraction of each class held out as the test split when there is no `test/` folder.
        split_seed: seed of that split.

    Returns:
        `(dataset, number of elements)`.

    Raises:
        DatasetNotFoundError: no such folder, or no images in it; the message says what layout is expected.
        ValueError: an unknown `split`, a test folder with a class the training folder lacks, or a
            `validation_split` outside (0, 1).

    Example:

    >>> import os, tempfile, numpy as np, keras, keras_okd
    >>> folder = tempfile.mkdtemp()
    >>> for name in ("cat", "dog"):
    ...     os.makedirs(os.path.join(folder, name))
    ...     for i in range(4):
    ...         keras.utils.save_img(os.path.join(folder, name, f"{i}.png"), np.full((8, 8, 3), 40 * i, "uint8"))
    >>> train, n = keras_okd.data.load_image_folder(folder, "train", validation_split=0.5)
    >>> n, [tuple(spec.shape) for spec in train.element_spec]
    (4, [(8, 8, 3), ()])
    """
    train, test, _ = file_lists(data_dir, validation_split, split_seed)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    paths, labels = train if split == "train" else test
    size = tuple(image_size) if image_size else image_size_of(train[0][0], channels)
    return files_dataset(paths, labels, size, channels), len(paths)


def image_folder(
    data_dir,
    batch_size=64,
    image_size=None,
    channels=3,
    validation_split=0.2,
    split_seed=0,
    seed=None,
    augment="standard",
    padding=4,
    mean=None,
    std=None,
    shuffle=True,
    cache=True,
):
    """Training and test pipelines of a folder of class sub-folders.

    Args:
        data_dir: the folder (layouts in the module docstring).
        batch_size: batch size.
        image_size: `[height, width]` images are resized to; default the first training image's size.
        channels: 3 (RGB) or 1 (grayscale).
        validation_split: fraction of each class held out for testing when there is no `test/` (or `val/`) folder.
        split_seed: seed of that split (fixed by default, so every run sees the same split).
        seed: shuffle and augmentation seed.
        augment: `"standard"` (pad `padding`, random crop, horizontal flip), `"crop"`, `"flip"` or None.
        padding: pixels of padding of the random crop.
        mean: per-channel mean of the [0, 1] pixels for normalisation (None: pixels stay in [0, 1]).
        std: per-channel standard deviation (required with `mean`).
        shuffle: shuffle the training set every epoch (False: fixed order).
        cache: keep the decoded uint8 images in memory after the first epoch.

    Returns:
        `(train_ds, test_ds, num_train_samples)`; training elements are `({"inputs", "index"}, label)`.

    Raises:
        DatasetNotFoundError: the folder or its images are missing.

    Example:

    ```python
    train, test, n = keras_okd.data.image_folder("~/flowers", image_size=(64, 64), validation_split=0.1)
    ```
    """
    if (mean is None) != (std is None):
        raise ValueError("image_folder: give both mean and std, or neither.")
    padding, flip = augment_options(augment, padding, "image_folder")
    train_files, test_files, _ = file_lists(data_dir, validation_split, split_seed)
    size = tuple(image_size) if image_size else image_size_of(train_files[0][0], channels)
    train = files_dataset(*train_files, size, channels)
    test = files_dataset(*test_files, size, channels)
    transform = ImageTransform(mean, std, padding=padding, flip=flip, seed=seed)
    train_ds = pipeline(train, batch_size, training=True, augment=transform, seed=seed, cache=cache,
                        shuffle_buffer=None if shuffle else 1)
    test_ds = transformed(pipeline(test, batch_size, training=False, cache=cache), ImageTransform(mean, std))
    return train_ds, test_ds, len(train_files[0])


def num_classes(data_dir, **_):
    """Number of classes of an image folder."""
    return len(class_names(data_dir))
