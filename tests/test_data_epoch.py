"""Epoch-seeded training pipelines: epoch e's order and augmentation are functions of (seed, e, step) alone."""

import numpy as np
import pytest
import tensorflow as tf

import keras_okd
from keras_okd.data.indexing import epoch_key, step_seed


def _epoch(ds, epoch):
    keras_okd.data.data_epoch(ds).set_epoch(epoch)
    return [(x["index"].numpy(), x["inputs"].numpy()) for x, _ in ds]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(i, j) and np.array_equal(u, v) for (i, u), (j, v) in zip(a, b))


def test_an_epoch_is_a_function_of_seed_and_epoch_only():
    train, _, n = keras_okd.data.get("digits", batch_size=500, seed=3, augment="shift")
    assert int(train.cardinality()) == 3  # known, for Keras's progress bar and steps
    first = _epoch(train, 4)
    np.testing.assert_array_equal(np.sort(np.concatenate([i for i, _ in first])), np.arange(n))
    assert _same(_epoch(train, 4), first)  # the same epoch again: same order and same shifts
    assert not _same(_epoch(train, 5), first)
    tf.random.set_seed(99)  # another global seed, another dataset object: the same epoch
    again, _, _ = keras_okd.data.get("digits", batch_size=500, seed=3, augment="shift")
    assert _same(_epoch(again, 4), first)
    other, _, _ = keras_okd.data.get("digits", batch_size=500, seed=4, augment="shift")
    assert not _same(_epoch(other, 4), first)


def test_augmentation_follows_the_epoch_and_step():
    x = np.random.default_rng(0).normal(size=(12, 6, 6, 1)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(12)))
    flip = keras_okd.data.PadCropFlip(padding=2)
    train = keras_okd.data.pipeline(ds, 4, training=True, augment=flip, seed=0, shuffle_buffer=1)
    batches = _epoch(train, 2)
    key = epoch_key(0, 2)
    for step, (index, images) in enumerate(batches):  # fixed order: batch `step` holds samples 4 step ..
        np.testing.assert_array_equal(index, np.arange(4 * step, 4 * step + 4))
        expected = flip(x[index], seed=step_seed(key, step)).numpy()
        np.testing.assert_array_equal(images, expected)
    assert not np.array_equal(batches[0][1], _epoch(train, 3)[0][1])


def test_without_the_callback_every_pass_draws_a_new_order():
    train, _, _ = keras_okd.data.get("digits", batch_size=1437, seed=0)
    orders = [np.concatenate([x["index"].numpy() for x, _ in train]) for _ in range(2)]
    assert not np.array_equal(*orders)


def test_pad_crop_flip_with_a_seed_is_stateless():
    images = np.random.default_rng(1).normal(size=(16, 6, 6, 2)).astype("float32")
    augment = keras_okd.data.PadCropFlip(padding=2)
    seed = tf.constant([7, 8], tf.int64)
    a, b = augment(images, seed=seed).numpy(), augment(images, seed=seed).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, augment(images, seed=tf.constant([7, 9], tf.int64)).numpy())


def test_data_epoch_needs_a_pipeline_dataset():
    train, test, _ = keras_okd.data.get("digits", batch_size=500, seed=0)
    assert isinstance(keras_okd.data.data_epoch(train), keras_okd.data.DataEpoch)
    with pytest.raises(ValueError, match="not made by keras_okd.data.pipeline"):
        keras_okd.data.data_epoch(test)
    with pytest.raises(ValueError, match="not made by keras_okd.data.pipeline"):
        keras_okd.data.data_epoch(train.map(lambda x, y: (x, y)))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        keras_okd.data.pipeline(tf.data.Dataset.range(3).map(lambda i: (i, i)), 0, training=True)
