import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import BACKEND, straight_and_resumed, tiny_student, to_numpy
from test_losses import np_softmax

import keras_okd

N = 96
(X_ALL, Y_ALL), (X_VAL, Y_VAL) = keras_okd.data.digits_arrays()
X, Y = X_ALL[:N], Y_ALL[:N]
INDEXED = {"inputs": X, "index": np.arange(N)}


def students(k=2, num_classes=10):
    return [tiny_student(num_classes, name=f"s{i}") for i in range(k)]


def make_tsb(warmup=0, k=2):
    d = keras_okd.methods.tsb(students(k), num_train_samples=N, warmup_epochs=warmup)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return d


def state_of(distiller):
    return [to_numpy(v).copy() for v in distiller.variables]


def assert_state_equal(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


# ---------------------------------------------------------------- construction errors
def test_needs_two_students():
    with pytest.raises(ValueError, match="at least 2 students"):
        keras_okd.OnlineDistiller([tiny_student()])


def test_students_must_share_classes():
    with pytest.raises(ValueError, match=r"same classes.*\[10, 7\]"):
        keras_okd.OnlineDistiller([tiny_student(10), tiny_student(7)])


def test_part_names_must_be_distinct_and_schedules_must_name_parts():
    parts = [keras_okd.knowledge.PeerDistillation(), keras_okd.knowledge.PeerDistillation()]
    with pytest.raises(ValueError, match="distinct"):
        keras_okd.OnlineDistiller(students(), knowledge=parts)
    with pytest.raises(ValueError, match="not among"):
        keras_okd.OnlineDistiller(
            students(), knowledge=parts[:1], schedules={"ta": [keras_okd.callbacks.WarmUp(2)]}
        )


def test_compile_refuses_a_loss():
    d = keras_okd.methods.dml(students())
    with pytest.raises(ValueError, match="own loss"):
        d.compile(optimizer="sgd", loss="mse")


# ---------------------------------------------------------------- bad data, refused before any state changes
def test_missing_index_is_refused_for_datasets():
    d = make_tsb()
    before = state_of(d)
    ds = tf.data.Dataset.from_tensor_slices((X, Y)).batch(32)
    with pytest.raises(ValueError, match="with_index"):
        d.fit(ds, epochs=1, verbose=0)
    assert_state_equal(before, state_of(d))


@pytest.mark.heavy
def test_numpy_arrays_use_their_positions_as_indices():
    d = make_tsb()
    d.fit(X[:40], Y[:40], epochs=2, batch_size=16, verbose=0)  # shuffled by Keras: positions travel with the rows
    counts = to_numpy(d.knowledge[0].counts)
    assert counts[:40].tolist() == [2] * 40 and counts[40:].sum() == 0
    with pytest.raises(ValueError, match="num_train_samples=200"):
        make_tsb().fit(np.concatenate([X, X, X])[:200], np.concatenate([Y, Y, Y])[:200], epochs=1, verbose=0)


@pytest.mark.heavy
@pytest.mark.parametrize("as_dataset", [False, True])
def test_index_out_of_range_is_refused(as_dataset):
    d = make_tsb()
    before = state_of(d)
    bad = {"inputs": X, "index": np.arange(N) + 5}
    if as_dataset:
        data = (tf.data.Dataset.from_tensor_slices((bad, Y)).batch(32),)
    else:
        data = (bad, Y)
    with pytest.raises(ValueError, match=r"\[0, 96\)"):
        d.fit(*data, epochs=1, verbose=0, shuffle=False)
    if as_dataset:  # the first two batches were fine and trained; the third was refused before its step
        assert int(to_numpy(d.optimizer.iterations)) == 2
        counts = to_numpy(d.knowledge[0].counts)
        assert counts[5:69].tolist() == [1] * 64 and counts[69:].sum() == 0
    else:
        assert_state_equal(before, state_of(d))


@pytest.mark.parametrize("as_dataset", [False, True])
def test_label_out_of_range_is_refused(as_dataset):
    d = make_tsb()
    before = state_of(d)
    bad_y = Y.copy()
    bad_y[0] = 10
    data = (tf.data.Dataset.from_tensor_slices((INDEXED, bad_y)).batch(32),) if as_dataset else (INDEXED, bad_y)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        d.fit(*data, epochs=1, verbose=0)
    assert_state_equal(before, state_of(d))


def test_one_hot_labels_are_refused():
    d = make_tsb()
    with pytest.raises(ValueError, match="one-hot"):
        d.fit(INDEXED, keras.utils.to_categorical(Y, 10), epochs=1, verbose=0)


def _explode(distiller):
    """Make student 1's logits overflow to inf: the loss is not finite, though every input is."""
    dense = distiller.students[1].layers[-1]
    dense.kernel.assign(np.full(dense.kernel.shape, 1e38, "float32"))


def test_non_finite_loss_raises_and_changes_nothing():
    d = make_tsb()
    _explode(d)
    before = state_of(d)
    trainable_before = [to_numpy(v).copy() for v in d.trainable_variables]
    bank_before = to_numpy(d.knowledge[0].bank).copy()
    with pytest.raises(FloatingPointError, match="student_1_ce"):
        d.fit(INDEXED, Y, epochs=1, batch_size=32, verbose=0)
    for u, v in zip(trainable_before, d.trainable_variables):
        np.testing.assert_array_equal(u, to_numpy(v))
    np.testing.assert_array_equal(bank_before, to_numpy(d.knowledge[0].bank))
    assert to_numpy(d.knowledge[0].counts).sum() == 0
    assert len(before) == len(d.variables)


def test_terminate_on_nan_stops_quietly_instead():
    d = make_tsb()
    _explode(d)
    history = d.fit(INDEXED, Y, epochs=3, batch_size=32, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()])
    assert not np.isfinite(history.history["loss"][0]) and len(history.history["loss"]) == 1
    assert to_numpy(d.knowledge[0].counts).sum() == 0


# ---------------------------------------------------------------- behaviour
@pytest.mark.heavy
def test_logs_name_every_term():
    d = make_tsb(k=3)
    history = d.fit(INDEXED, Y, validation_data=(X_VAL[:64], Y_VAL[:64]), epochs=1, batch_size=32, verbose=0)
    keys = set(history.history)
    for i in range(3):
        for term in ("ce", "ta", "si", "accuracy"):
            assert f"student_{i}_{term}" in keys and f"val_student_{i}_{term}" in keys
    assert {"loss", "ensemble_accuracy", "val_loss", "val_ensemble_accuracy"} <= keys


@pytest.mark.heavy
def test_one_epoch_visits_every_sample_once_and_rows_are_distributions():
    d = make_tsb()
    d.fit(keras_okd.data.pipeline(tf.data.Dataset.from_tensor_slices((X, Y)), 32, training=True, seed=0),
          epochs=2, verbose=0)
    ta = d.knowledge[0]
    assert to_numpy(ta.counts).tolist() == [2] * N
    np.testing.assert_allclose(to_numpy(ta.bank).sum(-1), 1 - 0.8**2, rtol=1e-5)


def test_train_step_writes_only_the_batch_rows():
    d = make_tsb()
    index = np.array([4, 50, 17, 90])
    d.train_on_batch({"inputs": X[index], "index": index}, Y[index])
    counts = to_numpy(d.knowledge[0].counts)
    bank = to_numpy(d.knowledge[0].bank)
    others = np.setdiff1d(np.arange(N), index)
    assert counts[index].tolist() == [1] * 4 and counts[others].sum() == 0
    assert np.all(bank[others] == 0) and np.all(bank[index] > 0)


@pytest.mark.heavy
def test_evaluate_and_predict_change_no_state():
    d = make_tsb(warmup=1)
    d.fit(INDEXED, Y, epochs=1, batch_size=32, verbose=0)
    d.knowledge[0].schedule.assign(0.25)
    before = state_of(d)
    d.evaluate(INDEXED, Y, batch_size=32, verbose=0)
    d.evaluate(X_VAL, Y_VAL, batch_size=32, verbose=0)
    d.predict(INDEXED, batch_size=32, verbose=0)
    d.predict(X_VAL, batch_size=32, verbose=0)
    after = state_of(d)
    n_metrics = len(d.metrics_variables)
    # metric accumulators are the only variables evaluate may change
    metric_ids = {id(v) for v in d.metrics_variables}
    kept = [i for i, v in enumerate(d.variables) if id(v) not in metric_ids]
    assert n_metrics > 0 and len(kept) > 0
    assert_state_equal([before[i] for i in kept], [after[i] for i in kept])


@pytest.mark.heavy
def test_predict_is_the_mean_of_student_probabilities_and_ensemble_model_matches():
    d = make_tsb()
    d.fit(INDEXED, Y, epochs=1, batch_size=32, verbose=0)
    got = d.predict(X_VAL, verbose=0)
    want = np.mean([np_softmax(to_numpy(s(X_VAL, training=False)).astype("float64")) for s in d.students], axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(to_numpy(d.ensemble_model()(X_VAL)), want, rtol=1e-4, atol=1e-6)


def test_the_exports_name_what_they_output():
    d = make_tsb()
    assert d.ensemble_model().layers[-1].name == "probabilities"  # the mean of the softmaxes
    assert d.deployed_model().layers[-1].name == "probabilities"
    d1 = keras_okd.OnlineDistiller([tiny_student(), tiny_student()], deploy_peer=1)
    assert d1.deployed_model().layers[-1].name == "probabilities"  # peer 1's softmax
    assert d.peer_model(0).layers[-1].name != "probabilities"  # a student: logits


def test_warmup_zeroes_kd_in_the_loss():
    d = make_tsb(warmup=5)
    history = d.fit(INDEXED, Y, epochs=1, batch_size=N, verbose=0, shuffle=False)
    ce = sum(history.history[f"student_{i}_ce"][0] for i in range(2))
    assert history.history["student_0_ta"][0] > 0  # the term is computed and logged ...
    np.testing.assert_allclose(history.history["loss"][0], ce, rtol=1e-5)  # ... but weighs nothing


# ---------------------------------------------------------------- saving
@pytest.mark.heavy
def test_whole_distiller_round_trips_as_keras_file(tmp_path):
    d = make_tsb(warmup=2)
    d.fit(INDEXED, Y, epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "distiller.keras"
    d.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, keras_okd.OnlineDistiller)
    assert [p.name for p in loaded.knowledge] == ["ta", "si"]
    assert loaded.schedules == d.schedules
    np.testing.assert_array_equal(to_numpy(loaded.knowledge[0].bank), to_numpy(d.knowledge[0].bank))
    np.testing.assert_array_equal(to_numpy(loaded.knowledge[0].counts), to_numpy(d.knowledge[0].counts))
    np.testing.assert_allclose(loaded.predict(X_VAL, verbose=0), d.predict(X_VAL, verbose=0), rtol=1e-6)
    loaded.fit(INDEXED, Y, epochs=1, batch_size=32, verbose=0)  # and it trains on
    assert to_numpy(loaded.knowledge[0].counts).tolist() == [2] * N


@pytest.mark.heavy
def test_save_weights_restores_bank_counts_and_schedules(tmp_path):
    d = make_tsb(warmup=0)
    d.fit(INDEXED, Y, epochs=1, batch_size=32, verbose=0)
    d.knowledge[1].schedule.assign(0.5)
    path = str(tmp_path / "d.weights.h5")
    d.save_weights(path)
    fresh = keras_okd.methods.tsb(students(), num_train_samples=N, warmup_epochs=0)
    fresh.load_weights(path)
    for a, b in zip(d.variables, fresh.variables):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def _other_backend():
    order = ["tensorflow", "jax", "torch"]
    return order[(order.index(BACKEND) + 1) % 3]


@pytest.mark.heavy
def test_students_load_on_another_backend_without_keras_okd(tmp_path):
    d = make_tsb()
    d.fit(INDEXED, Y, epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "student0.keras"
    d.students[0].save(path)
    np.save(tmp_path / "x.npy", X_VAL[:16])
    want = to_numpy(d.students[0](X_VAL[:16], training=False))
    code = (
        "import sys, numpy as np, keras\n"
        f"m = keras.saving.load_model({str(path)!r})\n"
        f"out = np.asarray(keras.ops.convert_to_numpy(m(np.load({str(tmp_path / 'x.npy')!r}), training=False)))\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, out)\n"
        "assert 'keras_okd' not in sys.modules\n"
    )
    env = {**os.environ, "KERAS_BACKEND": _other_backend()}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, rtol=1e-4, atol=1e-5)


@pytest.mark.heavy
def test_backup_and_restore_resumes_to_the_same_state(tmp_path):
    def run(callbacks):
        keras.utils.set_random_seed(7)
        d = make_tsb(warmup=1)
        d.fit(INDEXED, Y, epochs=3, batch_size=32, verbose=0, shuffle=False, callbacks=callbacks)
        return d

    straight, resumed = straight_and_resumed(run, tmp_path / "backup", epoch=2, batch=1)
    ta_s, ta_r = straight.knowledge[0], resumed.knowledge[0]
    np.testing.assert_array_equal(to_numpy(ta_r.counts), to_numpy(ta_s.counts))
    np.testing.assert_allclose(to_numpy(ta_r.bank), to_numpy(ta_s.bank), rtol=1e-5, atol=1e-6)
    for a, b in zip(straight.trainable_variables, resumed.trainable_variables):
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=1e-4, atol=1e-5)
    assert int(to_numpy(resumed.optimizer.iterations)) == int(to_numpy(straight.optimizer.iterations)) == 9


def test_coupled_weight_decay_adds_half_wd_times_squared_norm():
    d = make_tsb(warmup=5)
    d.compile(optimizer=keras.optimizers.SGD(0.0), coupled_weight_decay=1e-2)
    assert d.get_compile_config()["coupled_weight_decay"] == 1e-2
    plain = make_tsb(warmup=5)
    plain.set_weights(d.get_weights())
    with_decay = d.evaluate(INDEXED, Y, batch_size=N, verbose=0, return_dict=True)["loss"]
    without = plain.evaluate(INDEXED, Y, batch_size=N, verbose=0, return_dict=True)["loss"]
    squares = sum(float(np.sum(to_numpy(v).astype("float64") ** 2)) for v in d.trainable_variables)
    np.testing.assert_allclose(with_decay - without, 0.5 * 1e-2 * squares, rtol=1e-4)
    with pytest.raises(ValueError, match="coupled_weight_decay"):
        d.compile(optimizer="sgd", coupled_weight_decay=-1.0)


def test_schedules_of_the_older_form_go_to_the_parts_they_name():
    """`schedules=` (how distillers were saved before the parts owned their schedules) hands each list to its part;
    the distiller's config then holds them in the parts' configs only."""
    warm = keras_okd.knowledge.WarmUp(2)
    d = keras_okd.OnlineDistiller(students(), knowledge=[keras_okd.knowledge.PeerDistillation()],
                                  schedules={"dml": [warm]})
    assert d.knowledge[0].schedules == (warm,) and d.schedules == {"dml": [warm]}
    config = d.get_config()
    assert "schedules" not in config and config["knowledge"][0]["config"]["schedule"][0]["config"] == {"epochs": 2}
    old = dict(config, schedules={"dml": [keras.saving.serialize_keras_object(warm)]})
    del old["knowledge"][0]["config"]["schedule"]
    assert keras_okd.OnlineDistiller.from_config(old).schedules == {"dml": [warm]}
    with pytest.raises(ValueError, match=r"\['dml'\] have schedules of their own and other ones in schedules="):
        keras_okd.OnlineDistiller(students(), knowledge=[keras_okd.knowledge.PeerDistillation(schedule=warm)],
                                  schedules={"dml": [keras_okd.knowledge.RampUp(3)]})
