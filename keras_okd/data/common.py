"""Pieces of the loaders that need no TensorFlow: the not-found error, Keras's dataset folder, the `augment` options.

The numpy loaders (`keras_okd.data.idx`, `keras_okd.data.mnist_family`'s arrays) import only these, so they load
where TensorFlow is not installed; `keras_okd.data.images` re-exports them for the tf.data loaders.
"""

import os


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not available on this machine; the message says what to download and where to put it.

    A subclass of `FileNotFoundError`, raised by the loaders (`keras_okd.data.get`, `load_tinyimagenet`,
    `load_imagenet2012`, `load_image_folder`, ...) before anything is built; the CLI shows its message and exits
    with status 2. Do what the message says (download the files, or pass `data_dir=` where they are), then run again.

    Example:

    >>> import keras_okd
    >>> try:
    ...     keras_okd.data.load_tinyimagenet("/no/such/folder")
    ... except keras_okd.data.DatasetNotFoundError as error:
    ...     print(isinstance(error, FileNotFoundError), "tiny-imagenet-200" in str(error))
    True True
    """


def default_data_dir():
    """`$KERAS_HOME/datasets` (default `~/.keras/datasets`), where Keras keeps downloaded datasets."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets")


def augment_options(augment, padding, where):
    """`(padding, flip)` for an `augment` option: "standard" (pad-crop + flip), "crop", "flip" or None."""
    options = {"standard": (padding, True), "crop": (padding, False), "flip": (0, True), None: (0, False)}
    if augment not in options:
        raise ValueError(
            f"{where}: augment must be one of 'standard' (pad {padding}, random crop, horizontal flip), 'crop', "
            f"'flip' or None; got {augment!r}."
        )
    return options[augment]
