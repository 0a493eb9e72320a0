"""Large banks: reduced-precision storage, the size check before training, and the bank under mixed precision."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, tiny_student, to_numpy

import keras_okd
from keras_okd import backend
from keras_okd.knowledge import TemporalAccumulator

# Measured max |target - float32 target| over 12 visits of 64 samples, 3 peers x 10 classes, tau 4, beta 0.8, random
# logits of scale 3, the same on the three backends: float16 1.25e-4, bfloat16 9.5e-4 (0 at the first visit, whose
# target is computed in float32 before anything is stored). The bounds leave ~1.6x room. The error is the rounding of
# the stored EMA (float16: 11 significant bits, bfloat16: 8), enlarged by the bias correction 1 / (1 - beta^n).
ERROR_BOUND = {"float16": 2e-4, "bfloat16": 1.5e-3}


def _targets_over_visits(bank_dtype, visits=12, samples=64, peers=3, classes=10):
    part = TemporalAccumulator(samples, beta=0.8, temperature=4.0, bank_dtype=bank_dtype)
    part.build_for_peers(peers, classes)
    rng = np.random.default_rng(0)
    index = keras.ops.convert_to_tensor(np.arange(samples, dtype="int32"))
    out = []
    for _ in range(visits):
        logits = keras.ops.convert_to_tensor(rng.normal(scale=3.0, size=(samples, peers, classes)).astype("float32"))
        knowledge = part.targets(logits, {"index": index, "training": True})
        part.commit(knowledge["state"], keras.ops.convert_to_tensor(True))
        out.append(to_numpy(knowledge["targets"]))
    return np.stack(out), part


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_reduced_precision_bank_targets_stay_close_to_float32(dtype):
    exact, full = _targets_over_visits("float32")
    approx, part = _targets_over_visits(dtype)
    stored = keras.backend.standardize_dtype(part.bank.dtype)
    assert stored == ("uint16" if (BACKEND, dtype) == ("jax", "bfloat16") else dtype)  # bits of bfloat16 on JAX
    assert stored == backend.bank_storage_dtype(dtype)
    assert keras.backend.standardize_dtype(full.bank.dtype) == "float32"
    # The stored rows decode to the float32 bank rounded to `dtype` (all 64 samples visited 12 times).
    decoded = to_numpy(part.corrected_bank()) * (1 - 0.8**12)
    np.testing.assert_allclose(decoded, to_numpy(full.bank), atol=ERROR_BOUND[dtype])
    error = float(np.max(np.abs(approx - exact)))
    assert 0 < error < ERROR_BOUND[dtype], error
    np.testing.assert_allclose(approx.sum(-1), 1.0, atol=ERROR_BOUND[dtype] * 10)
    np.testing.assert_array_equal(to_numpy(part.counts), 12)


def _digits_like(n=64, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    y = rng.integers(0, classes, n).astype("int32")
    return {"inputs": x, "index": np.arange(n)}, y


@pytest.mark.heavy
def test_tsb_bank_dtype_halves_the_bank_and_trains():
    x, y = _digits_like()
    sizes = {}
    for dtype in ("float32", "bfloat16"):
        d = keras_okd.methods.tsb([tiny_student(), tiny_student()], num_train_samples=64, warmup_epochs=0,
                                  bank_dtype=dtype)
        d.compile(optimizer=keras.optimizers.SGD(0.05))
        history = d.fit(x, y, batch_size=16, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        ta = d.knowledge[0]
        assert keras.backend.standardize_dtype(ta.bank.dtype) == backend.bank_storage_dtype(dtype)
        np.testing.assert_allclose(to_numpy(ta.corrected_bank()).sum(-1), 1.0, atol=2e-2)
        sizes[dtype] = to_numpy(ta.bank).size * (4 if dtype == "float32" else 2)
        assert d.state_bytes() == sizes[dtype] + 64 * 4
    assert sizes["bfloat16"] * 2 == sizes["float32"]


def test_fit_logs_the_state_size_and_refuses_a_bank_the_device_cannot_hold(monkeypatch, capsys):
    x, y = _digits_like()
    d = keras_okd.methods.tsb([tiny_student(), tiny_student()], num_train_samples=64, warmup_epochs=0)
    d.compile(optimizer=keras.optimizers.SGD(0.05))
    d.fit(x, y, batch_size=32, epochs=1, verbose=1)
    expected = 64 * 2 * 10 * 4 + 64 * 4
    assert f"holds {expected:,} bytes" in capsys.readouterr().out
    monkeypatch.setattr(backend, "device_memory", lambda: (1000, "fake device"))
    before = to_numpy(d.knowledge[0].bank).copy()
    with pytest.raises(MemoryError, match=r"(?s)5,376 bytes.*fake device holds 1,000 bytes.*bfloat16.*host memory"):
        d.fit(x, y, batch_size=32, epochs=1, verbose=0)
    np.testing.assert_array_equal(to_numpy(d.knowledge[0].bank), before)


def test_building_a_bank_the_device_cannot_hold_fails_before_allocating(monkeypatch):
    monkeypatch.setattr(backend, "device_memory", lambda: (10**6, "fake device"))
    with pytest.raises(MemoryError, match=r"(?s)'ta' needs 1,284,000,000 bytes.*bank_dtype='float16'"):
        TemporalAccumulator(1_000_000, bank_dtype="float16").build_for_peers(2, 320)


def test_device_memory_reports_host_ram_on_this_machine():
    total, where = backend.device_memory()
    assert total is None or total > 2**28
    assert isinstance(where, str)


# ------------------------------------------------------------------ mixed precision
@pytest.mark.heavy
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_tsb_trains_under_mixed_precision_with_a_float32_bank(policy):
    keras.config.set_dtype_policy(policy)
    x, y = _digits_like()
    d = keras_okd.methods.tsb([tiny_student(), tiny_student()], num_train_samples=64, warmup_epochs=0)
    d.compile(optimizer=keras.optimizers.SGD(0.05))
    history = d.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    ta = d.knowledge[0]
    assert keras.backend.standardize_dtype(ta.bank.dtype) == "float32"
    np.testing.assert_array_equal(to_numpy(ta.counts), 2)
    np.testing.assert_allclose(to_numpy(ta.corrected_bank()).sum(-1), 1.0, atol=1e-5)


@pytest.mark.heavy
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_dkel_trains_under_mixed_precision_with_a_float32_teacher(policy):
    keras.config.set_dtype_policy(policy)
    network = keras_okd.models.multi_branch("simple_cnn", 3, input_shape=(8, 8, 1), per_branch_inputs=True, width=4)
    d = keras_okd.methods.dkel(network, views=keras_okd.data.peer_views(8, 8, padding=1), teacher_eta=0.3)
    d.compile(optimizer=keras.optimizers.SGD(0.05))
    x, y = _digits_like()
    history = d.fit(x["inputs"], y, batch_size=32, epochs=1, verbose=0)
    assert all(np.isfinite(v).all() for v in history.history.values())
    teacher_weights = [w for w in d.teachers[0].weights if "float" in str(w.dtype)]
    assert teacher_weights and all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in teacher_weights)
    assert all(np.isfinite(to_numpy(w)).all() for w in teacher_weights)


@pytest.mark.heavy
def test_teacher_ema_is_computed_in_float32_under_mixed_bfloat16():
    keras.config.set_dtype_policy("mixed_bfloat16")
    network = keras_okd.models.multi_branch("simple_cnn", 2, input_shape=(8, 8, 1), width=4)
    d = keras_okd.methods.dkel(network, teacher_eta=0.001, init_steps=0)
    pairs = d.teacher.pairs(d.students)
    for s, t in pairs:
        t.assign(keras.ops.zeros(t.shape, t.dtype))
        s.assign(keras.ops.ones(s.shape, s.dtype))
    d.teacher.pending.assign(1.0)
    x, y = _digits_like(16)
    d.begin_training_step()  # applies the pending EMA step, as a training step does before its forward pass
    for s, t in pairs:
        # 0.001 is not representable in bfloat16 (0.00099945...); float32 keeps it to ~1e-10
        np.testing.assert_allclose(to_numpy(t), 0.001, rtol=1e-6)
