"""What the distiller accepts as data, and bad data refused before any state changes."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_student, to_numpy

import keras_okd

N = 64
(X_ALL, Y_ALL), (X_VAL, Y_VAL) = keras_okd.data.digits_arrays()
X, Y = X_ALL[:N], Y_ALL[:N]


def make_tsb(students=None):
    students = students or [tiny_student(name="a"), tiny_student(name="b")]
    d = keras_okd.methods.tsb(students, num_train_samples=N, warmup_epochs=0)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return d


def state(d):
    return [to_numpy(v).copy() for v in d.variables]


def assert_unchanged(before, d):
    for u, v in zip(before, state(d)):
        np.testing.assert_array_equal(u, v)


def indexed(index, labels=Y, images=X, batch=16):
    return tf.data.Dataset.from_tensor_slices(({"inputs": images, "index": index}, labels)).batch(batch)


@pytest.mark.parametrize("as_dataset", [False, True])
def test_repeated_indices_are_refused(as_dataset):
    d = make_tsb()
    before = state(d)
    index = np.arange(N) % 8  # every batch of 16 repeats its indices
    with pytest.raises(ValueError, match="repeat"):
        if as_dataset:
            d.fit(indexed(index), epochs=1, verbose=0)
        else:
            d.fit({"inputs": X, "index": index}, Y, epochs=1, verbose=0)
    assert_unchanged(before, d)


def test_fractional_float_labels_from_tf_data_are_refused():
    d = make_tsb()
    before = state(d)
    with pytest.raises(ValueError, match="fractional"):
        d.fit(indexed(np.arange(N), Y.astype("float32") + 0.5), epochs=1, verbose=0)
    assert_unchanged(before, d)
    d.fit(indexed(np.arange(N), Y.astype("float32")), epochs=1, verbose=0)  # whole numbers as floats are fine


@pytest.mark.parametrize("as_dataset", [False, True])
def test_non_finite_inputs_are_refused_before_the_step(as_dataset):
    d = make_tsb()
    before = state(d)
    images = X.copy()
    images[3, 2, 2, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        if as_dataset:
            d.fit(indexed(np.arange(N), images=images), epochs=1, verbose=0)
        else:
            d.fit(images, Y, epochs=1, verbose=0)
    assert_unchanged(before, d)


def test_empty_training_data_is_refused():
    d = make_tsb()
    with pytest.raises(ValueError, match="empty"):
        d.fit(X[:0], Y[:0], epochs=1, verbose=0)
    with pytest.raises(ValueError, match="empty"):
        d.fit(indexed(np.arange(N)).take(0), epochs=1, verbose=0)


def test_index_and_label_batches_of_different_sizes_are_refused():
    d = make_tsb()
    ds = tf.data.Dataset.zip((
        tf.data.Dataset.from_tensor_slices({"inputs": X, "index": np.arange(N)}).batch(16),
        tf.data.Dataset.from_tensor_slices(Y).batch(12),
    ))
    before = state(d)
    with pytest.raises(ValueError, match="different sizes"):
        d.fit(ds, epochs=1, verbose=0)
    assert_unchanged(before, d)


def test_one_hot_labels_in_a_dataset_are_refused_before_batch_norm_moves():
    d = make_tsb()
    before = state(d)
    onehot = keras.utils.to_categorical(Y, 10)
    with pytest.raises(ValueError, match="one-hot"):
        d.fit(indexed(np.arange(N), onehot), epochs=1, verbose=0)
    assert_unchanged(before, d)


def two_input_students():
    def student(name):
        image = keras.Input((8, 8, 1), name="image")
        extra = keras.Input((3,), name="extra")
        x = keras.layers.Concatenate()([keras.layers.Flatten()(image), extra])
        return keras.Model({"image": image, "extra": extra}, keras.layers.Dense(10)(x), name=name)

    return [student("a"), student("b")]


def test_students_with_a_dict_of_named_inputs_train_evaluate_and_predict():
    rng = np.random.default_rng(0)
    x = {"image": X, "extra": rng.random((N, 3)).astype("float32")}
    d = make_tsb(two_input_students())
    d.fit(x, Y, epochs=1, batch_size=16, verbose=0)                       # positions are the indices
    assert to_numpy(d.knowledge[0].counts).tolist() == [1] * N
    d.fit({**x, "index": np.arange(N)}, Y, epochs=1, batch_size=16, verbose=0)   # explicit indices
    assert to_numpy(d.knowledge[0].counts).tolist() == [2] * N
    ds = tf.data.Dataset.from_tensor_slices(({**x, "index": np.arange(N)}, Y)).batch(16)
    d.fit(ds, epochs=1, verbose=0)
    logs = d.evaluate(x, Y, verbose=0, return_dict=True)
    assert 0.0 <= logs["ensemble_accuracy"] <= 1.0
    assert d.predict(x, verbose=0).shape == (N, 10)


def test_students_with_a_list_of_inputs_train_and_predict():
    def student(name):
        a, b = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
        x = keras.layers.Flatten()(keras.layers.Add()([a, b]))
        return keras.Model([a, b], keras.layers.Dense(10)(x), name=name)

    d = keras_okd.methods.dml([student("a"), student("b")])
    d.compile(optimizer="sgd")
    d.fit([X, X], Y, epochs=1, batch_size=16, verbose=0)
    assert d.predict([X, X], verbose=0).shape == (N, 10)


def test_fit_on_a_dataset_prints_no_shuffle_warning(recwarn):
    d = make_tsb()
    d.fit(indexed(np.arange(N)), epochs=1, verbose=0)
    assert not [w for w in recwarn if "shuffle" in str(w.message)]
