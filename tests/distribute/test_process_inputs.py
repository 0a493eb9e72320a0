"""What each process feeds under a JAX distribution over several processes (keras_okd.backend.process_inputs).

One process stands in for several: a `DataParallel` over this process's device, marked multi-process. The real
two-process runs are in test_replica_equality.py.
"""

import keras
import numpy as np
import pytest
from conftest import BACKEND, tiny_student

import keras_okd
from keras_okd import backend

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution over JAX processes")


def _data(n, batch, drop_remainder):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    inputs = {"inputs": rng.normal(size=(n, 8, 8, 1)).astype("float32"), "index": np.arange(n)}
    data = tf.data.Dataset.from_tensor_slices((inputs, rng.integers(0, 10, n)))
    return data.batch(batch, drop_remainder=drop_remainder)


@pytest.fixture
def several_processes():
    distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices()[:1])
    distribution._is_multi_process = True
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(distribution)
    yield distribution
    keras.distribution.set_distribution(previous)


def test_training_with_a_partial_last_batch_is_refused_before_any_step(several_processes):
    distiller = keras_okd.methods.tsb([tiny_student(), tiny_student()], num_train_samples=40, warmup_epochs=0)
    distiller.compile(optimizer="sgd")
    before = [np.array(v) for v in distiller.variables]
    with pytest.raises(ValueError, match="drop_remainder=True"):
        distiller.fit(_data(40, 16, drop_remainder=False), epochs=1, verbose=0)
    for old, variable in zip(before, distiller.variables):
        np.testing.assert_array_equal(old, np.array(variable))
    assert several_processes.auto_shard_dataset  # left as it was


def test_full_training_batches_are_sharded_here_and_evaluation_data_fed_whole(several_processes):
    train, test = _data(48, 16, drop_remainder=True), _data(40, 16, drop_remainder=False)
    with backend.process_inputs(train, test) as (share, whole):
        assert not several_processes.auto_shard_dataset  # Keras must not cut them again
        assert whole is test
        assert int(share.cardinality()) == 3 and [int(b[1].shape[0]) for b in share] == [16, 16, 16]
    assert several_processes.auto_shard_dataset
    distiller = keras_okd.methods.tsb([tiny_student(), tiny_student()], num_train_samples=48, warmup_epochs=0)
    distiller.compile(optimizer="sgd")
    history = distiller.fit(train, validation_data=test, epochs=1, verbose=0)
    assert np.isfinite(history.history["val_loss"][0]) and several_processes.auto_shard_dataset
