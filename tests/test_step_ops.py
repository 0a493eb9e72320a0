"""Fast paths of step operations: `keras_okd.engines.ema_update` and `keras_okd.metrics.MeanGroup`, against numpy and
against the plain Keras way they replace."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy

from keras_okd.engines import ema_update
from keras_okd.metrics import MeanGroup


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


def test_ema_update_refuses_unpaired_lists():
    teachers, students = _pairs(np.random.default_rng(2))
    with pytest.raises(ValueError, match="3 targets but 4 sources"):
        ema_update(teachers[:3], students, 0.1)
    with pytest.raises(ValueError, match="has shape"):
        ema_update(teachers[:2], students[1:3], 0.1)


def test_mean_group_equals_separate_means():
    rng = np.random.default_rng(3)
    names = ["a", "b", "c"]
    group, means = MeanGroup(names), [keras.metrics.Mean() for _ in names]
    per_sample = MeanGroup(["x", "y"], name="samples")
    sample_means = [keras.metrics.Mean() for _ in range(2)]
    for step in range(3):
        values = rng.normal(size=3).astype("float32")
        group.update_state(values)
        for m, v in zip(means, values):
            m.update_state(v)
        rows = rng.normal(size=(5, 2)).astype("float32")
        weight = rng.uniform(size=5).astype("float32") if step else None
        per_sample.update_state(rows, sample_weight=weight)
        for i, m in enumerate(sample_means):
            m.update_state(rows[:, i], sample_weight=weight)
    result = group.result()
    assert list(result) == names
    for n, m in zip(names, means):
        np.testing.assert_allclose(to_numpy(result[n]), to_numpy(m.result()), rtol=1e-6)
    for n, m in zip(["x", "y"], sample_means):
        np.testing.assert_allclose(to_numpy(per_sample.result()[n]), to_numpy(m.result()), rtol=1e-6)
    group.reset_state()
    assert all(float(to_numpy(v)) == 0.0 for v in group.result().values())


def test_mean_group_logs_each_name_through_fit_and_refuses_bad_shapes():
    class Model(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)
            self.group = MeanGroup(["first", "second"], name="group")

        def call(self, x):
            return self.dense(x)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            self.group.update_state(keras.ops.stack([keras.ops.mean(y_pred[:, 0]) * 0 + 1.0,
                                                     keras.ops.mean(y_pred[:, 1]) * 0 + 3.0]))
            return keras.ops.mean(keras.ops.square(y_pred - y))

    model = Model()
    model.compile(optimizer="sgd")
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    logs = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert logs["first"] == [1.0] and logs["second"] == [3.0]
    with pytest.raises(ValueError, match=r"values must have shape \(2,\) or \(batch, 2\)"):
        MeanGroup(["a", "b"]).update_state(np.zeros(3, "float32"))
    with pytest.raises(ValueError, match="distinct names"):
        MeanGroup(["a", "a"])
    clone = MeanGroup.from_config(MeanGroup(["a", "b"], name="g").get_config())
    assert clone.names == ["a", "b"] and clone.name == "g"
