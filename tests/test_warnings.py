"""Warnings an ordinary run used to print, each fixed at its cause: a DeprecationWarning at every `compile` (numpy 2's
copy keyword, through `np.array` of a Variable), the optimizer state skipped by `load_weights` into a fresh distiller,
and TensorFlow's 'did not fully read the dataset being cached' at the start of every CLI run."""

import warnings

import keras
import numpy as np
import pytest
from conftest import tiny_student, to_numpy

import keras_okd


def test_compile_warns_nothing():
    distiller = keras_okd.methods.dml([tiny_student(), tiny_student()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    with pytest.raises(ValueError, match="learning_rate must be >= 0, got -1.0"):  # the check it makes still holds
        keras_okd.methods.dml([tiny_student(), tiny_student()]).compile(optimizer=keras.optimizers.SGD(-1.0))


@pytest.mark.heavy
def test_load_weights_into_a_fresh_distiller_restores_the_optimizer_silently(tmp_path):
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype("float32")
    y = np.arange(8) % 10

    def make():
        keras.utils.set_random_seed(0)
        distiller = keras_okd.methods.dml([tiny_student(), tiny_student()])
        distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        return distiller

    trained = make()
    trained.fit(x, y, epochs=1, batch_size=8, verbose=0)
    trained.save_weights(tmp_path / "d.weights.h5")
    fresh = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was: "Skipping variable loading for optimizer ..., because it has 4 variables"
        fresh.load_weights(tmp_path / "d.weights.h5")
    assert len(fresh.optimizer.variables) == len(trained.optimizer.variables)
    for got, want in zip(fresh.optimizer.variables, trained.optimizer.variables):
        np.testing.assert_array_equal(to_numpy(got), to_numpy(want))  # momentum and counters, not only the weights


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="Keras's TensorFlow trainer alone calls it")
def test_fit_without_a_strategy_reads_no_batch_before_training():
    # Reading one batch to build the model left the cached training pipeline partly read: TensorFlow then warned
    # "The calling iterator did not fully read the dataset being cached" at the start of every CLI run.
    read = []

    class Iterator:
        def __iter__(self):
            read.append("epoch iterator")
            return iter(())

    distiller = keras_okd.methods.dml([tiny_student(), tiny_student()])
    distiller._maybe_symbolic_build(iterator=Iterator())
    assert read == []
