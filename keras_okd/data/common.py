"""Pieces of the loaders that need no TensorFlow: the not-found error, Keras's dataset folder, the `augment` options,
and `dataset_variant`, which names one dataset of a family's loader (`fashion_mnist` of the MNIST family's, ...).

The numpy loaders (`keras_okd.data.idx`, `keras_okd.data.mnist_family`'s arrays) import only these, so they load
where TensorFlow is not installed; `keras_okd.data.images` re-exports them for the tf.data loaders.
"""

import ast
import inspect
import os
import re


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not available on this machine; the message says what to download and where to put it.

    A subclass of `FileNotFoundError`, raised by the loaders (`keras_okd.data.get`, `load_tinyimagenet`,
    `load_imagenet2012`, `load_image_folder`, ...) before anything is built; the CLI shows its message, with the
    loader options it advises in the CLI's spelling (`spelled`), and exits with status 3. Do what the message says
    (download the files, or pass `data_dir=` where they are), then run again.

    The message writes each loader option it advises as `` `name=value` `` (a Python keyword argument, with
    backticks); `spelled` rewrites those for another interface.

    Example:

    >>> import keras_okd
    >>> try:
    ...     keras_okd.data.load_tinyimagenet("/no/such/folder")
    ... except keras_okd.data.DatasetNotFoundError as error:
    ...     print(isinstance(error, FileNotFoundError), "tiny-imagenet-200" in str(error))
    ...     print("`--set dataset.data_dir=<folder>`" in error.spelled(lambda name, v: f"`--set dataset.{name}={v}`"))
    True True
    True
    """

    def spelled(self, spell):
        """The message with every advised option `` `name=value` `` (backticks included) replaced by
        `spell(name, value)`.

        Args:
            spell: `(name, value) -> str`; `value` is the text after `=` (`False`, `'/data'` and `<folder>` come as
                `"false"`, `"/data"` and `"<folder>"`: Python literals are read, booleans lower-cased as YAML
                writes them). It returns None to keep the Python spelling.

        Example:

        >>> error = DatasetNotFoundError("not here: pass `data_dir='/data'` or `download=True`.")
        >>> error.spelled(lambda name, value: f"`--{name.replace('_', '-')} {value}`")
        'not here: pass `--data-dir /data` or `--download true`.'
        """
        def replace(match):
            name, value = match.group(1), match.group(2)
            try:
                literal = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                literal = value
            text = str(literal).lower() if isinstance(literal, bool) else str(literal)
            spelled = spell(name, text)
            return match.group(0) if spelled is None else spelled

        return re.sub(r"`([a-z_]+)=([^`]*)`", replace, str(self))


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


def dataset_variant(function, dataset, name, doc):
    """`function(dataset, ...)` as a function of its own: a dataset family's one implementation, named for one of its
    datasets (Fashion-MNIST and MNIST, CIFAR-10 and CIFAR-100 are each one loader taking the dataset's name first).

    The function made has `function`'s signature less its first argument (the annotations and defaults, which
    `keras_okd.experiments.config` checks a config's options against, included), `name` as its name and `doc` as its
    docstring.

    Args:
        function: the family's implementation, `function(dataset, *args, **kwargs)`.
        dataset: the dataset's name, passed as `function`'s first argument.
        name: the name of the function made (its `__name__`).
        doc: its docstring.

    Returns:
        A function `(*args, **kwargs) -> function(dataset, *args, **kwargs)`.

    Example:

    >>> import inspect
    >>> def scaled(dataset, factor: float = 2.0):
    ...     return f"{dataset} x{factor}"
    >>> digits_scaled = dataset_variant(scaled, "digits", "digits_scaled", "The digits, scaled.")
    >>> digits_scaled(), digits_scaled.__name__, str(inspect.signature(digits_scaled))
    ('digits x2.0', 'digits_scaled', '(factor: float = 2.0)')
    """
    signature = inspect.signature(function)

    def variant(*args, **kwargs):
        return function(dataset, *args, **kwargs)

    variant.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    variant.__name__ = variant.__qualname__ = name
    variant.__module__ = function.__module__
    variant.__doc__ = doc
    return variant
