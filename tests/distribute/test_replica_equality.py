"""Several replicas hold the same bank, counts, teacher and weights after every step, and match one device.

Each run is a subprocess (`_replica_worker.py`): device counts must be configured before the backend initialises.
TensorFlow: `MirroredStrategy` over 2 logical CPU devices, against the same code on one of them. JAX:
`keras.distribution.DataParallel` over 2 host devices (XLA_FLAGS), against one device. Both train TSB (2 students,
bank + counts) and DKEL (3 branches, mean teacher, synchronized batch norm on TensorFlow) for 8 steps of global batch
16 (2 epochs of 64 samples; 8 per replica under 2 replicas), then save every replica's copy of every variable.

Measured: replicas identical (max difference 0.0) on both backends; mirrored vs one device: max difference
3.7e-6 (DKEL batch-norm moving statistics; 6e-7 for TSB's weights); JAX DataParallel vs one device: 0.0. The
tolerance asserted is atol = rtol = 1e-4 (float32 sums in a different order across replicas).
"""

import collections
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import BACKEND

WORKER = os.path.join(os.path.dirname(__file__), "_replica_worker.py")
TOLERANCE = 1e-4


def _run(strategies, method, tmp_path):
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("XLA_FLAGS", None)
    procs = {}
    for strategy in strategies:
        out = tmp_path / f"{strategy}-{method}.npz"
        cmd = [sys.executable, WORKER, "--strategy", strategy, "--method", method, "--out", str(out)]
        procs[strategy] = (subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), out)
    results = {}
    for strategy, (proc, out) in procs.items():
        try:
            log, _ = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"{strategy} worker timed out")
        assert proc.returncode == 0, log.decode()[-3000:]
        results[strategy] = _load(out)
    return results


def _load(path):
    data = np.load(path)
    variables = collections.defaultdict(list)
    for key in data.files:
        if not key.endswith("|loss"):
            method, i, name, _ = key.split("|")
            variables[(method, i, name)].append(data[key])
    losses = {key.split("|")[0]: data[key] for key in data.files if key.endswith("|loss")}
    return losses, dict(variables)


def _check(results, distributed):
    loss_one, one = results["none"]
    loss_many, many = results[distributed]
    assert set(one) == set(many) and set(loss_one) == {"tsb", "dkel"}
    names = [name for _, _, name in many]
    assert "ta/bank" in names and "ta/counts" in names and any("teacher_pending" in n for n in names), names
    for key, copies in many.items():
        assert len(copies) == 2, (key, len(copies))  # one copy per replica
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=f"replicas differ: {key}")
        np.testing.assert_allclose(copies[0], one[key][0], atol=TOLERANCE, rtol=TOLERANCE, err_msg=str(key))
    for method in loss_one:
        np.testing.assert_allclose(loss_many[method], loss_one[method], rtol=TOLERANCE)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute.MirroredStrategy is TensorFlow's")
def test_mirrored_replicas_agree_and_match_one_device(tmp_path):
    _check(_run(["none", "mirrored"], "tsb,dkel", tmp_path), "mirrored")


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution.DataParallel is JAX's")
def test_jax_data_parallel_replicas_agree_and_match_one_device(tmp_path):
    _check(_run(["none", "jax_data_parallel"], "tsb,dkel", tmp_path), "jax_data_parallel")


def test_strategy_names_are_checked():
    from keras_okd import distribute

    with pytest.raises(ValueError, match="Unknown strategy"):
        distribute.strategy_scope("horovod")
    other = "jax_data_parallel" if BACKEND != "jax" else "mirrored"
    with pytest.raises(ValueError, match="backend"):
        distribute.strategy_scope(other)
    with distribute.strategy_scope("none"):
        assert distribute.num_replicas() == 1
