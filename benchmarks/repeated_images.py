"""A dataset plugin for the evidence campaign (issue 19): the stratified Fashion-MNIST subset of `train_size` images,
each image `repeats` times in the training set, every copy a sample of its own (its own index, so its own rows of a
method's per-sample state: TSB's accumulator, the contrastive memories), shuffled together every epoch.

Why: TSB's gain over independent training grows with the training set (ledger n500 +0.60, n1000 +0.91, n2000 +1.28,
n5000 +1.67) while the same 1,000 images trained twice as long gain +0.71 (n1000_300ep), so the steps alone do not
make it. Two things grow with the set: the diversity of the images, and the number of steps between two updates of a
sample's accumulated prediction (the accumulator's time constant, in steps). 1,000 images repeated twice
(`fashion_mnist_repeated`, `train_size=1000, repeats=2`) for 150 epochs has n2000's steps per epoch, steps, and slots
refreshed every 32 steps, with n1000's images: a gain like n2000's says the accumulator's pace makes it, a gain like
n1000_300ep's says the images do.

Everything else is the n2000_plain recipe (no augmentation, batch 64, SGD momentum 0.9, coupled weight decay 5e-4, lr
0.01 with 5 epochs of linear warm-up then cosine, 150 epochs, two simple_cnn_8, TSB's KD warm-up 10 epochs). It runs
through `keras-okd train` (tf.data; `benchmarks/fashion_mnist_gpu.py` reads Fashion-MNIST and MNIST only), one
process per method, each over the five seeds, from the repository root, then into the ledger:

    for m in independent tsb; do
      KERAS_BACKEND=tensorflow keras-okd train --config configs/fashion_mnist/$m.yaml --run-dir runs/repeated/$m \
        --set "imports=[benchmarks/repeated_images.py]" \
        --set "dataset={name: fashion_mnist_repeated, train_size: 1000, repeats: 2, batch_size: 64}" \
        --set "students=[simple_cnn_8, simple_cnn_8]" --set epochs=150 --set validation_freq=10 \
        --set "schedule={type: cosine, warmup_epochs: 5}" --set "seeds=[0, 1, 2, 3, 4]" \
        $([ $m = tsb ] && echo --set method.params.warmup_epochs=10) &
    done; wait
    keras-okd ledger add runs/repeated --tag n1000x2_plain
    keras-okd report ledger/n1000x2_plain

About 175 s per seed (174-179 s measured), the two processes side by side.

Used as a config import (`imports: [../../benchmarks/repeated_images.py]` in a file of `configs/fashion_mnist/`, or
`--set imports=[benchmarks/repeated_images.py]` from the repository root), it
registers the dataset `fashion_mnist_repeated`.
"""

import numpy as np

import keras_okd


@keras_okd.data.register("fashion_mnist_repeated", num_classes=10, overwrite=True)
def fashion_mnist_repeated(batch_size: int = 64, seed: int | None = None, train_size: int = 1000, repeats: int = 2,
                           subset_seed: int = 0, data_dir: str | None = None, download: bool = False,
                           shuffle: bool = True):
    """Fashion-MNIST's stratified `train_size` images (`keras_okd.data.fashion_mnist_arrays`), `repeats` copies of
    each as separate samples, and the 10,000 test images; no augmentation.

    Returns:
        `(train_ds, test_ds, train_size * repeats)`.
    """
    import tensorflow as tf

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"fashion_mnist_repeated: repeats must be an integer >= 1, got {repeats!r}.")
    (x, y), (xt, yt) = keras_okd.data.fashion_mnist_arrays(data_dir=data_dir, download=download,
                                                           train_size=train_size, subset_seed=subset_seed)
    x, y = np.concatenate([x] * repeats), np.concatenate([y] * repeats)  # copy r of image n is sample r * N + n
    train = keras_okd.data.pipeline(tf.data.Dataset.from_tensor_slices((x, y)), batch_size, training=True, seed=seed,
                                    shuffle_buffer=None if shuffle else 1)
    test = keras_okd.data.pipeline(tf.data.Dataset.from_tensor_slices((xt, yt)), batch_size, training=False)
    return train, test, len(y)
