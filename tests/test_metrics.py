"""`MeanGroup` (benchmarks/mean_group.py, the prototype bench_step_parts.py times) against separate
`keras.metrics.Mean` trackers, and through `fit`."""

import pathlib
import sys

import keras
import numpy as np
import pytest
from conftest import to_numpy

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
from mean_group import MeanGroup  # noqa: E402


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


@pytest.mark.heavy("tensorflow", "jax", "torch")
def test_keras_callbacks_monitor_every_logged_accuracy_without_a_mode(tmp_path):
    # EarlyStopping, ModelCheckpoint(save_best_only) and ReduceLROnPlateau infer the direction from the metric
    # (keras/src/callbacks/monitor_callback.py): accuracies are maximised, cross-entropies minimised.
    import keras_okd
    from conftest import tiny_student

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 8, 8, 1)).astype("float32"), np.arange(16) % 10
    distiller = keras_okd.OnlineDistiller([tiny_student(), tiny_student()], teacher_eta=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    accuracies = [f"val_{name}" for name in ("student_0_accuracy", "student_1_accuracy", "ensemble_accuracy",
                                             "teacher_0_accuracy", "teacher_1_accuracy", "teacher_ensemble_accuracy")]
    monitors = accuracies + ["student_0_accuracy", "val_student_1_ce"]
    callbacks = []
    for k, monitor in enumerate(monitors):
        callbacks += [keras.callbacks.EarlyStopping(monitor=monitor, patience=10),
                      keras.callbacks.ModelCheckpoint(str(tmp_path / f"{k}.weights.h5"), monitor=monitor,
                                                      save_best_only=True, save_weights_only=True),
                      keras.callbacks.ReduceLROnPlateau(monitor=monitor, patience=10)]
    history = distiller.fit(x, y, validation_data=(x, y), epochs=3, batch_size=8, verbose=0,
                            callbacks=callbacks).history
    assert set(monitors) <= set(history)
    for callback in callbacks:
        values = history[callback.monitor]
        best = min(values) if callback.monitor.endswith("_ce") else max(values)
        assert float(callback.best) == pytest.approx(best), (type(callback).__name__, callback.monitor, values)
