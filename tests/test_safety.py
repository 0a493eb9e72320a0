"""A non-finite step changes nothing (batch-norm statistics included); a failed call leaves the distiller usable."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, tiny_student, to_numpy

import keras_okd

N = 64
(X_ALL, Y_ALL), (X_VAL, Y_VAL) = keras_okd.data.digits_arrays()
X, Y = X_ALL[:N], Y_ALL[:N]


def make_tsb():
    d = keras_okd.methods.tsb([tiny_student(name="a"), tiny_student(name="b")], num_train_samples=N, warmup_epochs=0)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return d


def student_state(d):
    return [to_numpy(v).copy() for s in d.students for v in s.weights]


def _explode_before_batch_norm(d):
    """Student 1's first convolution overflows to inf, so its batch-norm statistics would turn non-finite."""
    conv = d.students[1].layers[1]
    conv.kernel.assign(np.full(conv.kernel.shape, 1e38, "float32"))


@pytest.mark.parametrize("quiet", [False, True])
def test_a_non_finite_step_leaves_every_student_variable_and_the_bank_as_they_were(quiet):
    d = make_tsb()
    d.fit(X, Y, epochs=1, batch_size=32, verbose=0)  # a healthy epoch first: statistics have moved from their init
    _explode_before_batch_norm(d)
    before = student_state(d)
    bank, counts = to_numpy(d.knowledge[0].bank).copy(), to_numpy(d.knowledge[0].counts).copy()
    if quiet:
        history = d.fit(X, Y, epochs=2, batch_size=32, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()])
        assert len(history.history["loss"]) == 1 and not np.isfinite(history.history["loss"][0])
    else:
        with pytest.raises(FloatingPointError, match="changed nothing"):
            d.fit(X, Y, epochs=1, batch_size=32, verbose=0)
    after = student_state(d)
    moving = [v for v in d.students[1].non_trainable_variables]
    assert moving and all(np.isfinite(to_numpy(v)).all() for v in moving)
    for u, v in zip(before, after):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(bank, to_numpy(d.knowledge[0].bank))
    np.testing.assert_array_equal(counts, to_numpy(d.knowledge[0].counts))


def test_training_goes_on_after_a_refused_step():
    d = make_tsb()
    conv = d.students[1].layers[1]
    good = to_numpy(conv.kernel).copy()
    _explode_before_batch_norm(d)
    with pytest.raises(FloatingPointError):
        d.fit(X, Y, epochs=1, batch_size=32, verbose=0)
    conv.kernel.assign(good)
    history = d.fit(X, Y, epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(np.isfinite(to_numpy(v)).all() for v in d.variables)


@pytest.mark.parametrize("bad", ["shape", "key"])
def test_a_failed_predict_leaves_the_distiller_usable(bad, tmp_path):
    d = make_tsb()
    d.fit(X, Y, epochs=1, batch_size=32, verbose=0)
    want = d.predict(X_VAL[:16], verbose=0)
    x = np.zeros((4, 9, 9, 1), "float32") if bad == "shape" else {"pictures": X_VAL[:4]}
    with pytest.raises((ValueError, KeyError, TypeError)):
        d.predict(x, verbose=0)
    np.testing.assert_allclose(d.predict(X_VAL[:16], verbose=0), want, rtol=1e-6, atol=1e-6)
    assert len(d.students[0].get_weights()) > 0
    d.save(tmp_path / "d.keras")
    d.fit(X, Y, epochs=1, batch_size=32, verbose=0)


def test_predict_refuses_images_of_another_size_on_every_backend():
    d = make_tsb()
    with pytest.raises(ValueError, match=r"\(None, 8, 8, 1\).*\(\w*, 9, 9, 1\)"):
        d.predict(np.zeros((4, 9, 9, 1), "float32"), verbose=0)


def test_a_failed_evaluate_and_fit_leave_the_distiller_usable():
    d = make_tsb()
    with pytest.raises(ValueError):
        d.evaluate(X, np.full(N, 12), verbose=0)
    with pytest.raises(ValueError):
        d.fit(X, np.full(N, 12), verbose=0)
    history = d.fit(X, Y, epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_a_student_that_outputs_probabilities_is_warned_about():
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
    probabilities = keras.Model(inputs, outputs, name="soft")
    with pytest.warns(UserWarning, match="expects logits"):
        keras_okd.methods.dml([probabilities, tiny_student(name="b")])


def test_a_negative_learning_rate_is_refused():
    d = keras_okd.methods.dml([tiny_student(name="a"), tiny_student(name="b")])
    with pytest.raises(ValueError, match="learning_rate must be >= 0, got -0.1"):
        d.compile(optimizer=keras.optimizers.SGD(-0.1))


@pytest.mark.skipif(BACKEND != "jax", reason="the trap is in Keras's JAX trainer")
def test_jax_variables_stay_attached_after_a_failed_first_step():
    d = make_tsb()
    with pytest.raises(ValueError):
        d.fit({"inputs": X, "index": np.arange(N) + N}, Y, epochs=1, verbose=0)
    assert all(v.value is not None for v in d.variables)
