"""`MeanGroup`: the running means of several named values in one metric, updated by one call per step.

A prototype of a cheaper metric tracker, timed against one `keras.metrics.Mean` per value by bench_step_parts.py
(tests/test_metrics.py holds it to those means). keras_okd itself does not use it, so it lives here, not in the
package.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_okd")
class MeanGroup(keras.metrics.Metric):
    """Running means of K named values, held in one state vector and updated with one call.

    Equivalent to K `keras.metrics.Mean` trackers updated with the same `sample_weight`, at the cost of one: a
    distiller logs a loss, an accuracy and a spread per peer and part (about 25 values for DKEL), and on an eager
    engine (torch) every `Mean.update_state` is a Python call and four or five kernels. `result()` returns a dict
    `{name: mean}`, which Keras's `fit` and `evaluate` log under each name.

    `update_state(values)` takes `(K,)` (one value per name for this step, counted once, as `Mean` counts a scalar)
    or `(B, K)` (per-sample values, counted per sample, with an optional `sample_weight` of shape `(B,)`).

    Args:
        names: the K value names, in the order of the values' last axis.
        name: metric name.
        dtype: state dtype (default float32).

    Example:

    >>> m = MeanGroup(["student_0_ce", "student_1_ce"])
    >>> m.update_state(keras.ops.convert_to_tensor([1.0, 3.0]))
    >>> m.update_state(keras.ops.convert_to_tensor([2.0, 5.0]))
    >>> {k: float(v) for k, v in m.result().items()}
    {'student_0_ce': 1.5, 'student_1_ce': 4.0}
    """

    def __init__(self, names, name="mean_group", dtype=None):
        super().__init__(name=name, dtype=dtype or "float32")
        self.names = [str(n) for n in names]
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"MeanGroup needs one or more distinct names, got {self.names}.")
        self.total = self.add_variable(shape=(len(self.names),), initializer="zeros", dtype=self.dtype, name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype=self.dtype, name="count")

    def update_state(self, values, sample_weight=None):
        values = ops.cast(values, self.dtype)
        if tuple(values.shape[-1:]) != (len(self.names),) or len(values.shape) > 2:
            raise ValueError(
                f"MeanGroup {self.name}: values must have shape ({len(self.names)},) or (batch, {len(self.names)}) "
                f"for names {self.names}; got {tuple(values.shape)}."
            )
        if len(values.shape) == 1:
            values = values[None]
        if sample_weight is None:
            self.total.assign_add(ops.sum(values, axis=0))
            self.count.assign_add(ops.cast(ops.shape(values)[0], self.dtype))
            return
        weight = ops.reshape(ops.cast(sample_weight, self.dtype), (-1,))
        self.total.assign_add(ops.sum(values * weight[:, None], axis=0))
        self.count.assign_add(ops.sum(weight))

    def reset_state(self):
        self.total.assign(ops.zeros(self.total.shape, self.dtype))
        self.count.assign(ops.zeros((), self.dtype))

    def result(self):
        means = ops.divide_no_nan(self.total, self.count)
        return {n: means[i] for i, n in enumerate(self.names)}

    def get_config(self):
        return {"names": self.names, "name": self.name, "dtype": self.dtype}
