"""The IDX file format of MNIST and Fashion-MNIST: read it (gzip-compressed or plain), check it, write it.

An IDX file is a header and one array, big-endian (http://yann.lecun.com/exdb/mnist/, "file formats"):

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    4 * d       the size of each dimension, big-endian uint32
    the rest    the elements, row-major, big-endian

Images are `idx3` files (count, rows, columns) and labels `idx1` files (count). A file is read as gzip when it starts
with gzip's magic bytes (1f 8b), whatever its name, so `train-images-idx3-ubyte.gz` and an unpacked
`train-images-idx3-ubyte` both work.

Example:

>>> import os, tempfile, numpy as np
>>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte.gz")
>>> write_idx(path, np.array([3, 1, 4], "uint8"))
>>> read_idx(path).tolist()
[3, 1, 4]
"""

import gzip
import os
import struct
import zlib

import numpy as np

#: IDX element type code -> numpy dtype (big-endian where it matters).
DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """A file is not a valid IDX file (bad magic number, truncated, wrong shape); the message names the file.

    A subclass of `ValueError`, raised by `read_idx` (and the Fashion-MNIST / MNIST loaders, which read IDX files);
    a truncated or damaged download is the usual cause: download the file again.

    Example:

    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> write_idx(path, np.arange(10, dtype="uint8"))
    >>> with open(path, "r+b") as f:
    ...     _ = f.truncate(10)   # cut short: the 8-byte header and 2 of the 10 labels
    >>> try:
    ...     read_idx(path)
    ... except IDXFormatError as error:
    ...     print(str(error).split(": ", 1)[1])
    truncated: the header says shape (10,) (10 bytes of data), the file holds 2 bytes of data. Download it again.
    """


def _read_bytes(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as error:
        raise IDXFormatError(
            f"{path}: the gzip stream is damaged or cut short ({error}); the file is {len(data):,} bytes. "
            "Download it again (or unpack it and check the IDX file it holds)."
        ) from None


def read_idx(path):
    """Read one IDX file (gzip or plain) into a numpy array of its native type (uint8 for MNIST's files).

    Args:
        path: path of the file.

    Returns:
        A numpy array whose shape is the file's dimensions.

    Raises:
        FileNotFoundError: no such file.
        IDXFormatError: a bad magic number (not an IDX file), an unknown element type, a header or data shorter
            than the header says (truncated download), or bytes after the data; the message names the file and the
            numbers.

    Example:

    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "images-idx3-ubyte.gz")
    >>> write_idx(path, np.zeros((5, 28, 28), "uint8"))
    >>> images = read_idx(path)
    >>> images.shape, images.dtype
    ((5, 28, 28), dtype('uint8'))
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IDXFormatError(f"{path}: {len(data)} bytes, shorter than the 4-byte IDX magic number (empty or cut "
                             "short?).")
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in DTYPES:
        raise IDXFormatError(
            f"{path}: bad magic number 0x{data[:4].hex()}: an IDX file starts with 0x0000, a type code "
            f"({', '.join(f'0x{c:02x}' for c in DTYPES)}) and the number of dimensions (MNIST images: 0x00000803, "
            "labels: 0x00000801). Is this an IDX file?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(f"{path}: truncated header: {ndim} dimensions need {header} bytes, the file has "
                             f"{len(data)}.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found < expected:
        raise IDXFormatError(
            f"{path}: truncated: the header says shape {tuple(shape)} ({expected:,} bytes of data), the file holds "
            f"{found:,} bytes of data. Download it again."
        )
    if found > expected:
        raise IDXFormatError(f"{path}: {found - expected:,} bytes after the {expected:,} bytes of data that the "
                             f"header's shape {tuple(shape)} describes; the file is not a valid IDX file.")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array):
    """Write a numpy array as an IDX file, gzip-compressed when `path` ends with `.gz`.

    Args:
        path: output path.
        array: a numpy array of uint8, int8, int16, int32, float32 or float64.

    Raises:
        ValueError: a dtype IDX cannot hold (cast the array first, e.g. int64 labels to uint8).

    Example:

    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "values-idx2.gz")
    >>> write_idx(path, np.array([[1.5, -2.0]], "float32"))
    >>> read_idx(path)
    array([[ 1.5, -2. ]], dtype=float32)
    >>> write_idx(path, np.array([1, 2], "int64"))
    Traceback (most recent call last):
    ValueError: write_idx: IDX holds uint8, int8, int16, int32, float32 or float64, got int64.
    """
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("=")
    if dtype not in _CODES:
        raise ValueError(f"write_idx: IDX holds uint8, int8, int16, int32, float32 or float64, got {array.dtype}.")
    code = _CODES[dtype]
    data = (bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.astype(DTYPES[code]).tobytes())
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def read_images_and_labels(images_path, labels_path):
    """An `idx3` image file and its `idx1` label file, checked against each other.

    Args:
        images_path: path of the images file (count x rows x columns).
        labels_path: path of the labels file (count).

    Returns:
        `(images, labels)`: uint8 `(N, rows, columns)` and the labels as int64 `(N,)`.

    Raises:
        IDXFormatError: a file is not valid IDX, the images are not 3-D or the labels not 1-D, or the two counts
            differ (the message names both files and both counts).
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise IDXFormatError(f"{images_path}: expected images of shape (count, rows, columns), got shape "
                             f"{images.shape}.")
    if labels.ndim != 1:
        raise IDXFormatError(f"{labels_path}: expected labels of shape (count,), got shape {labels.shape}.")
    if len(images) != len(labels):
        raise IDXFormatError(
            f"count mismatch: {images_path} holds {len(images):,} images, {labels_path} holds {len(labels):,} "
            "labels; the two files are not a pair (or one is from another release)."
        )
    return images, labels.astype("int64")
