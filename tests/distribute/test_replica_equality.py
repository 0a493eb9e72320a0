"""Several replicas hold the same bank, counts, teacher and weights after every step, and match one device.

Each run is a subprocess (`_replica_worker.py`, started by `replica_runs.run`): device counts and clusters must be
set before the backend initialises. TensorFlow: `MirroredStrategy` over 2 logical CPU devices, and
`MultiWorkerMirroredStrategy` over 2 processes on 127.0.0.1 (TF_CONFIG). JAX: `keras.distribution.DataParallel`
over 2 host devices (XLA_FLAGS), and over 2 processes on 127.0.0.1 (KERAS_DISTRIBUTION_*). Each is compared with
the same code on one device. Both train TSB (2 students, bank + counts) and DKEL (3 branches, mean teacher,
synchronized batch norm on TensorFlow) for 8 steps of global batch 16 (2 epochs of 64 samples; 8 per replica), then
save every replica's copy of every variable and fit/evaluate/predict's outputs. Two-process runs are killed if they
have not finished in 240 s (a process waiting for a peer that died would wait forever).

Measured (`python benchmarks/replica_equality.py` per backend): replicas identical (0.0) everywhere; against one
device, state within 3.7e-6 (TensorFlow, both strategies) and 6.7e-6 (JAX, both), the DKEL evaluate loss within
3.1e-5 of 25.5 (TensorFlow) and 4.6e-5 of 55.9 (JAX). The tolerance asserted is atol = rtol = 1e-4 (float32 sums in
a different order across replicas).
"""

import numpy as np
import pytest
from conftest import BACKEND
from replica_runs import run

TOLERANCE = 1e-4


def _run(strategies, method, tmp_path):
    try:
        return run(strategies, method, str(tmp_path), backend=BACKEND)
    except RuntimeError as error:
        pytest.fail(str(error))


def _check(results, distributed):
    outputs_one, one = results["none"]
    outputs_many, many = results[distributed]
    assert set(one) == set(many)
    assert set(outputs_one) == {(m, k) for m in ("tsb", "dkel") for k in ("loss", "evaluate", "predict")}
    assert {(m, k) for m in ("tsb", "dkel") for k in ("loss", "evaluate")} <= set(outputs_many)
    names = [name for _, _, name in many]
    assert "ta/bank" in names and "ta/counts" in names and any("mean_teacher/pending" in n for n in names), names
    for key, copies in many.items():
        assert len(copies) == 2, (key, len(copies))  # one copy per replica
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=f"replicas differ: {key}")
        np.testing.assert_allclose(copies[0], one[key][0], atol=TOLERANCE, rtol=TOLERANCE, err_msg=str(key))
    for key, value in outputs_many.items():
        np.testing.assert_allclose(value, outputs_one[key], atol=TOLERANCE, rtol=TOLERANCE, err_msg=str(key))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute.MirroredStrategy is TensorFlow's")
def test_mirrored_replicas_agree_and_match_one_device(tmp_path):
    _check(_run(["none", "mirrored"], "tsb,dkel", tmp_path), "mirrored")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute.MultiWorkerMirroredStrategy is TensorFlow's")
def test_two_worker_processes_agree_and_match_one_device(tmp_path):
    # Two processes on 127.0.0.1, one CPU replica each, cluster from TF_CONFIG; both are killed if either hangs.
    _check(_run(["none", "multi_worker"], "tsb,dkel", tmp_path), "multi_worker")


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution.DataParallel is JAX's")
def test_jax_data_parallel_replicas_agree_and_match_one_device(tmp_path):
    _check(_run(["none", "jax_data_parallel"], "tsb,dkel", tmp_path), "jax_data_parallel")


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution over JAX processes")
def test_two_jax_processes_agree_and_match_one_device(tmp_path):
    # Two processes on 127.0.0.1 (KERAS_DISTRIBUTION_* variables), one CPU device each; killed if either hangs.
    _check(_run(["none", "jax_processes"], "tsb,dkel", tmp_path), "jax_processes")


def test_strategy_names_are_checked():
    from keras_okd import distribute

    with pytest.raises(ValueError, match="Unknown strategy"):
        distribute.strategy_scope("horovod")
    other = "jax_data_parallel" if BACKEND != "jax" else "mirrored"
    with pytest.raises(ValueError, match="backend"):
        distribute.strategy_scope(other)
    with distribute.strategy_scope("none"):
        assert distribute.num_replicas() == 1
