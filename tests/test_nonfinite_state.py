"""State that is not finite, and inputs that are not what they seem (issue 17): a finite loss whose step made the
batch-norm statistics non-finite is refused like a non-finite loss; a student whose outputs are probabilities is
warned about whatever layer made them; labels of a dtype that cannot be class ids are refused naming the labels.
Engine-specific (the step's state): runs on every backend."""

import warnings

import keras
import numpy as np
import pytest
from conftest import tiny_student, to_numpy

import keras_okd

N = 64
(X_ALL, Y_ALL), _ = keras_okd.data.digits_arrays()
X, Y = X_ALL[:N], Y_ALL[:N]


def _dml(students=None):
    d = keras_okd.methods.dml(students or [tiny_student(name="a"), tiny_student(name="b")])
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return d


def _state(d):
    return [to_numpy(v).copy() for s in d.students for v in s.weights]


def test_a_finite_loss_that_made_batch_norm_statistics_infinite_is_refused_and_changes_nothing():
    d = _dml()
    d.fit(X, Y, epochs=1, batch_size=32, verbose=0)  # a healthy epoch first
    before = _state(d)
    with pytest.raises(FloatingPointError, match="batch-norm statistics non-finite"):
        d.fit(X * np.float32(1e30), Y, epochs=1, batch_size=32, verbose=0)  # finite inputs, of huge magnitude
    for u, v in zip(before, _state(d)):
        np.testing.assert_array_equal(u, v)
    assert all(np.isfinite(to_numpy(v)).all() for s in d.students for v in s.non_trainable_variables)
    history = d.fit(X, Y, epochs=1, batch_size=32, verbose=0)  # and training goes on
    assert np.isfinite(history.history["loss"][0])


def _lambda_softmax_student(name):
    inputs = keras.Input((8, 8, 1))
    logits = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Lambda(lambda t: keras.ops.softmax(t))(logits), name=name)


def test_a_student_whose_outputs_are_probabilities_is_warned_about_whatever_made_them():
    with pytest.warns(UserWarning, match=r"student_1 \(lam\) outputs probabilities \(on a probe batch every row is "
                                         "non-negative and sums to one\)"):
        keras_okd.methods.dml([tiny_student(name="a"), _lambda_softmax_student("lam")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # logits: no warning
        keras_okd.methods.dml([tiny_student(name="a"), tiny_student(name="b")])


@pytest.mark.parametrize("labels", [Y.astype(str), Y.astype(complex), Y.astype(object)])
def test_labels_that_cannot_be_class_ids_are_refused_naming_the_labels(labels):
    d = _dml()
    before = _state(d)
    with pytest.raises(ValueError, match=f"labels must be integer class ids .*got labels of dtype {labels.dtype}"):
        d.fit(X, labels, epochs=1, batch_size=32, verbose=0)
    for u, v in zip(before, _state(d)):
        np.testing.assert_array_equal(u, v)


def test_a_dataset_of_string_labels_is_refused_naming_the_labels():
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((X, Y.astype(str))).batch(32)
    with pytest.raises(ValueError, match="got labels of dtype string"):
        _dml().fit(ds, epochs=1, verbose=0)
