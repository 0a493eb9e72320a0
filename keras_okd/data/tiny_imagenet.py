"""TinyImageNet (200 classes, 64x64, 100,000 training and 10,000 validation images) from the official archive.

The archive `tiny-imagenet-200.zip` unpacks to:

    tiny-imagenet-200/
      wnids.txt                         the 200 class ids (WordNet ids), one a line: this order is the label order
      train/<wnid>/images/*.JPEG        500 training images per class
      val/images/*.JPEG                 10,000 validation images, in one folder ...
      val/val_annotations.txt           ... labelled by this file: "<file name>\\t<wnid>\\t<box>" per line
      test/images/*.JPEG                unlabelled: not used

The papers (DKEL, PCL) report validation accuracy; `tinyimagenet` returns the validation set as its test split.
Training augmentation as theirs: random crop with 4 pixels of padding and horizontal flip. Normalisation: ImageNet's
per-channel mean and std (TinyImageNet is a subset of ImageNet).
"""

import os

from keras_okd.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetNotFoundError,
    ImageTransform,
    augment_options,
    default_data_dir,
    files_dataset,
    list_images,
    transformed,
)
from keras_okd.data.indexing import pipeline

IMAGE_SIZE = (64, 64)
ARCHIVE_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def _not_found(data_dir, detail):
    return DatasetNotFoundError(
        f"TinyImageNet not found: {detail}. Download {ARCHIVE_URL} (about 240 MB) and unzip it into {data_dir}, so "
        f"that {os.path.join(data_dir, 'tiny-imagenet-200', 'wnids.txt')} exists (or pass `data_dir=<folder>`, the "
        "folder that holds tiny-imagenet-200/, or the tiny-imagenet-200 folder itself)."
    )


def find_root(data_dir=None):
    """The `tiny-imagenet-200` folder: `data_dir` itself or `data_dir/tiny-imagenet-200`.

    Raises:
        DatasetNotFoundError: neither holds `wnids.txt`; the message says what to download and where to put it.
    """
    data_dir = os.path.expanduser(data_dir or default_data_dir())
    for root in (data_dir, os.path.join(data_dir, "tiny-imagenet-200")):
        if os.path.isfile(os.path.join(root, "wnids.txt")):
            return root
    raise _not_found(data_dir, f"no wnids.txt in {data_dir} or {os.path.join(data_dir, 'tiny-imagenet-200')}")


def class_ids(data_dir=None):
    """The WordNet ids of the classes, in label order (the lines of `wnids.txt`)."""
    with open(os.path.join(find_root(data_dir), "wnids.txt")) as f:
        return [line.strip() for line in f if line.strip()]


def file_lists(data_dir=None, split="train"):
    """`(paths, labels)` of a split (`"train"` or `"val"`), in a fixed order.

    Training files: class by class in `wnids.txt` order, file names sorted. Validation files: in the order of
    `val/val_annotations.txt`.

    Raises:
        DatasetNotFoundError: a folder or file of the layout is missing.
        ValueError: unknown split, or an annotation names a class that `wnids.txt` does not list.
    """
    root = find_root(data_dir)
    wnids = class_ids(root)
    label_of = {wnid: i for i, wnid in enumerate(wnids)}
    paths, labels = [], []
    if split == "train":
        for wnid in wnids:
            folder = os.path.join(root, "train", wnid, "images")
            if not os.path.isdir(folder):
                raise _not_found(os.path.dirname(root), f"missing folder {folder} (incomplete archive?)")
            files = list_images(folder)
            paths += files
            labels += [label_of[wnid]] * len(files)
    elif split in ("val", "validation", "test"):
        annotations = os.path.join(root, "val", "val_annotations.txt")
        if not os.path.isfile(annotations):
            raise _not_found(os.path.dirname(root), f"missing file {annotations} (incomplete archive?)")
        with open(annotations) as f:
            for number, line in enumerate(f, 1):
                fields = line.strip().split("\t")
                if len(fields) < 2:
                    continue
                name, wnid = fields[0], fields[1]
                if wnid not in label_of:
                    raise ValueError(f"{annotations}:{number}: class {wnid!r} is not listed in wnids.txt.")
                paths.append(os.path.join(root, "val", "images", name))
                labels.append(label_of[wnid])
    else:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
    if not paths:
        raise _not_found(os.path.dirname(root), f"no {split} images under {root}")
    return paths, labels


def load_tinyimagenet(data_dir=None, split="train"):
    """One split as an unbatched `(uint8 image (64, 64, 3), int64 label)` dataset in its fixed order.

    Args:
        data_dir: folder holding `tiny-imagenet-200/` (or that folder itself); default `~/.keras/datasets`.
        split: `"train"` or `"val"`.

    Returns:
        A `tf.data.Dataset`.

    Raises:
        DatasetNotFoundError: the data is not there; the message says what to download and where to put it.

    Example:

    ```python
    val = keras_okd.data.load_tinyimagenet("~/data", split="val")   # ~/data/tiny-imagenet-200/...
    image, label = next(iter(val))                                   # uint8 (64, 64, 3), int64
    ```
    """
    paths, labels = file_lists(data_dir, split)
    return files_dataset(paths, labels, IMAGE_SIZE, channels=3)


def tinyimagenet(data_dir=None, batch_size=128, seed=None, augment="standard", shuffle=True, cache=True):
    """Training and validation pipelines of TinyImageNet as DKEL/PCL use them.

    Args:
        data_dir: folder holding `tiny-imagenet-200/` (or that folder itself); default `~/.keras/datasets`.
        batch_size: batch size (DKEL: 128).
        seed: shuffle and augmentation seed.
        augment: `"standard"` (pad 4, random 64x64 crop, horizontal flip), `"crop"`, `"flip"` or None.
        shuffle: shuffle the training set every epoch (False: fixed order, for debugging and exact-resume tests).
        cache: keep the decoded uint8 images in memory after the first epoch (about 1.3 GB for the training set).

    Returns:
        `(train_ds, val_ds, num_train_samples)`; training elements are `({"inputs", "index"}, label)` with
        normalised float32 images.

    Raises:
        DatasetNotFoundError: the data is not there; the message says what to download and where to put it.

    Example:

    ```python
    train, val, n = keras_okd.data.tinyimagenet("~/data")   # ~/data/tiny-imagenet-200/...
    ```
    """
    padding, flip = augment_options(augment, 4, "tinyimagenet")
    train_paths, train_labels = file_lists(data_dir, "train")
    val_paths, val_labels = file_lists(data_dir, "val")
    train = files_dataset(train_paths, train_labels, IMAGE_SIZE)
    val = files_dataset(val_paths, val_labels, IMAGE_SIZE)
    transform = ImageTransform(IMAGENET_MEAN, IMAGENET_STD, padding=padding, flip=flip, seed=seed)
    test_transform = ImageTransform(IMAGENET_MEAN, IMAGENET_STD)
    train_ds = pipeline(train, batch_size, training=True, augment=transform, seed=seed, cache=cache,
                        shuffle_buffer=None if shuffle else 1)
    val_ds = transformed(pipeline(val, batch_size, training=False, cache=cache), test_transform)
    return train_ds, val_ds, len(train_paths)
