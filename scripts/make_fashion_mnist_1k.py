"""Write the Fashion-MNIST subset bundled with keras-okd (keras_okd/data/fashion_mnist_1k/): the stratified 1,000
training images of `train_size=1000, subset_seed=0` (keras_okd.data.stratified_subset, file order kept) and all
10,000 test images, as gzip-compressed IDX files in the original format, from Debian's dataset-fashion-mnist files.

    python scripts/make_fashion_mnist_1k.py            # rewrites the four files; their bytes depend only on the data

Fashion-MNIST (Zalando Research, https://github.com/zalandoresearch/fashion-mnist) is MIT-licensed; the licence
travels with the files (LICENSE in that folder). Training on the bundled folder sees the same images, with the same
sample indices, as training on the full files with `train_size: 1000` (tests/test_mnist_family.py checks it).
"""

import gzip
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from keras_okd.data import idx, mnist_family  # noqa: E402

OUT = os.path.join(ROOT, "keras_okd", "data", "fashion_mnist_1k")


def write(path, array):
    """gzip with a fixed timestamp and no file name, so the bytes depend only on the array."""
    plain = os.path.join(OUT, ".plain")
    idx.write_idx(plain, array)
    with open(plain, "rb") as f:
        data = f.read()
    os.remove(plain)
    with open(path, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as z:
            z.write(data)


def main():
    (x, y), (xt, yt) = mnist_family.load_raw("fashion_mnist", download=False)
    keep = mnist_family.stratified_subset(y, 1000, 0)
    os.makedirs(OUT, exist_ok=True)
    for name, array in (("train-images-idx3-ubyte.gz", x[keep]), ("train-labels-idx1-ubyte.gz", y[keep]),
                        ("t10k-images-idx3-ubyte.gz", xt), ("t10k-labels-idx1-ubyte.gz", yt)):
        write(os.path.join(OUT, name), array.astype("uint8"))
        print(f"wrote {os.path.join(OUT, name)} ({os.path.getsize(os.path.join(OUT, name)):,} bytes)")


if __name__ == "__main__":
    main()
