"""The mean teacher's EMA over lists of variables, `keras_okd.backend.lerp_variables` (one fused kernel under torch),
against numpy, eagerly and inside a compiled function."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy

from keras_okd import backend


def ema_update(targets, sources, amount):
    if not hasattr(backend, "lerp_variables"):
        pytest.skip("keras_okd.backend.lerp_variables is not in this tree")
    return backend.lerp_variables(targets, sources, amount)


def _pairs(rng):
    shapes = [(3, 3, 2, 4), (4,), (7, 5), ()]
    teachers = [keras.Variable(rng.normal(size=s).astype("float32")) for s in shapes]
    students = [keras.Variable(rng.normal(size=s).astype("float32")) for s in shapes]
    return teachers, students


@pytest.mark.parametrize("amount", [0.001, 0.7, "tensor"])
def test_ema_update_matches_numpy(amount):
    rng = np.random.default_rng(0)
    teachers, students = _pairs(rng)
    t0, s0 = [to_numpy(t).copy() for t in teachers], [to_numpy(s).copy() for s in students]
    eta = 0.3 if amount == "tensor" else amount
    value = keras.ops.convert_to_tensor(eta, "float32") if amount == "tensor" else amount
    for _ in range(2):
        ema_update(teachers, students, value)
        t0 = [t + eta * (s - t) for t, s in zip(t0, s0)]
    for got, want, s, before in zip(teachers, t0, students, s0):
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(to_numpy(s), before)  # the sources are untouched


def test_ema_update_inside_a_compiled_function():
    rng = np.random.default_rng(1)
    teachers, students = _pairs(rng)
    want = [to_numpy(t) + 0.5 * (to_numpy(s) - to_numpy(t)) for t, s in zip(teachers, students)]
    if BACKEND == "jax":
        import jax

        def step(t_values, s_values):
            with keras.StatelessScope(state_mapping=list(zip(teachers + students, t_values + s_values))) as scope:
                ema_update(teachers, students, 0.5)
            return [scope.get_current_value(t) for t in teachers]

        got = jax.jit(step)([t.value for t in teachers], [s.value for s in students])
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        tf.function(lambda: ema_update(teachers, students, 0.5), jit_compile=True)()
        got = teachers
    else:
        ema_update(teachers, students, 0.5)
        got = teachers
    for g, w in zip(got, want):
        np.testing.assert_allclose(to_numpy(g), w, rtol=1e-6, atol=1e-7)
