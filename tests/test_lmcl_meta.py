"""L-MCL's meta-optimised layer-pair weights: the engines' unrolled second-order gradient against float64 numpy finite
differences of the same look-ahead, the pair weights against numpy, what the meta step and the training step may
change, the batch the meta step reads again, saving, and the refusals."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, straight_and_resumed, tiny_student, to_numpy
from keras import ops

import keras_okd
from keras_okd import backend, knowledge
from keras_okd.distiller.inputs import batch_again
from keras_okd.knowledge.features import lmcl as lmcl_module

LR, MOMENTUM, DECAY = 0.3, 0.9, 0.01


# -------------------------------------------------------------- the look-ahead of a weighted least-squares problem
def problem(seed=0):
    rng = np.random.default_rng(seed)
    return dict(x=rng.normal(size=(6, 3)), y=rng.normal(size=6), t=rng.normal(size=6), z=rng.normal(size=(6, 2)),
                theta=[rng.normal(size=3), np.array(0.4)], phi=[rng.normal(size=2), np.array(-0.2)])


def np_look_ahead(p, phi, steps):
    """float64: `steps` SGD steps (momentum, weight decay) on the phi-weighted squared error, one on the plain squared
    error against other targets, then that error: the unrolled objective whose phi-gradient the engines take."""
    w = 1.0 / (1.0 + np.exp(-(p["z"] @ phi[0] + phi[1])))
    theta, momenta = [a.copy() for a in p["theta"]], [np.zeros_like(a) for a in p["theta"]]
    for k in range(steps + 1):
        r = p["x"] @ theta[0] + theta[1] - (p["y"] if k < steps else p["t"])
        c = (w if k < steps else np.ones_like(w)) * 2.0 * r / len(r)
        grads = [p["x"].T @ c, np.sum(c)]
        momenta = [MOMENTUM * m + g + DECAY * a for a, g, m in zip(theta, grads, momenta)]
        theta = [a - LR * m for a, m in zip(theta, momenta)]
    return np.mean((p["x"] @ theta[0] + theta[1] - p["t"]) ** 2)


def engine_gradient(p, steps):
    x, y, t, z = (ops.convert_to_tensor(p[k].astype("float32")) for k in ("x", "y", "t", "z"))

    def weighted(theta, phi):
        w = ops.sigmoid(ops.matmul(z, phi[0]) + phi[1])
        return ops.mean(w * (ops.matmul(x, theta[0]) + theta[1] - y) ** 2)

    def plain(theta, phi):
        return ops.mean((ops.matmul(x, theta[0]) + theta[1] - t) ** 2)

    def sgd(theta, grads, momenta, step):
        momenta = momenta or [ops.zeros_like(a) for a in theta]
        momenta = [MOMENTUM * m + g + DECAY * a for a, g, m in zip(theta, grads, momenta)]
        return [a - LR * m for a, m in zip(theta, momenta)], momenta

    def tensors(values):
        return [ops.convert_to_tensor(v.astype("float32")) for v in values]

    return [to_numpy(g) for g in backend.unrolled_gradient([weighted] * steps + [plain], plain, tensors(p["theta"]),
                                                           tensors(p["phi"]), sgd)]


@pytest.mark.parametrize("steps", [0, 1, 2])
def test_unrolled_gradient_matches_numpy_finite_differences(steps):
    p = problem()
    got = engine_gradient(p, steps)
    h = 1e-6
    for n, value in enumerate(p["phi"]):
        want = np.zeros_like(value)
        for position in np.ndindex(value.shape):
            up, down = [a.copy() for a in p["phi"]], [a.copy() for a in p["phi"]]
            up[n][position] += h
            down[n][position] -= h
            want[position] = (np_look_ahead(p, up, steps) - np_look_ahead(p, down, steps)) / (2 * h)
        if steps == 0:  # the cross-entropy step alone: phi plays no part
            assert np.all(want == 0.0) and np.all(got[n] == 0.0)
        else:
            np.testing.assert_allclose(got[n], want, rtol=2e-4, atol=1e-6 * np.abs(want).max())
    print(f"\n{BACKEND} unrolled_gradient, {steps} weighted steps: {[np.round(g, 5).tolist() for g in got]}")


def test_pair_weights_match_numpy():
    rng = np.random.default_rng(1)
    projected = rng.normal(size=(4, 5, 3)).astype("float32")
    unit = projected / np.linalg.norm(projected, axis=-1, keepdims=True)
    want = 1.0 / (1.0 + np.exp(-np.einsum("bap,bcp->bac", unit, unit)))
    np.testing.assert_allclose(to_numpy(lmcl_module.pair_weights(projected)), want, rtol=1e-5)


# --------------------------------------------------------------------------------------------- through the distiller
def distiller(**kwargs):
    keras.utils.set_random_seed(0)
    pair = [tiny_student(name=f"s{i}") for i in range(2)]
    layers = [[next(layer.name for layer in s.layers if isinstance(layer, kind))
               for kind in (keras.layers.ReLU, keras.layers.Flatten)] for s in pair]
    kwargs.setdefault("weighting", "meta")
    d = keras_okd.methods.lmcl(pair, num_train_samples=64, layers=layers, num_negatives=8, embedding_dim=8, seed=3,
                               **kwargs)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return d


def data():
    (x, y), _ = keras_okd.data.digits_arrays()
    return {"inputs": x[:64], "index": np.arange(64)}, y[:64]


def values(variables):
    return [to_numpy(v).copy() for v in variables]


def test_the_training_step_leaves_the_pair_weights_and_the_meta_step_moves_only_them():
    d = distiller(meta_every=1)
    x, y = data()
    part = d.knowledge[0]
    projections = list(part.projections.weights)
    assert len(projections) == 8 and not any(v.trainable for v in projections)  # 4 slots: kernel and bias each
    assert not any(p is v for p in projections for v in d.trainable_variables)
    batch = ({k: v[:32] for k, v in x.items()}, y[:32])
    d.train_on_batch(*batch)  # Keras's step alone: no meta step
    before_all = values(d.variables)
    before = values(projections)
    d.train_on_batch(*batch)
    assert all(np.array_equal(a, b) for a, b in zip(values(projections), before))
    assert any(not np.array_equal(a, b) for a, b in zip(values(d.trainable_variables), before_all))

    before_all = {id(v): to_numpy(v).copy() for v in d.variables}
    part.outer_step(d, *batch)
    grads = [to_numpy(g) for g in part._meta_gradient[1](  # the look-ahead's gradient at the state before the step
        [ops.convert_to_tensor(before_all[id(v)]) for v in d.trainable_variables],
        [ops.convert_to_tensor(before_all[id(v)]) for v in d.non_trainable_variables],
        keras.tree.map_structure(ops.convert_to_tensor, batch[0]), ops.convert_to_tensor(batch[1]),
        ops.convert_to_tensor(np.float32(0.05)))]
    moved = {id(v) for v in projections} | {id(v) for v in part.projection_velocity.items}
    for v in d.variables:
        if id(v) not in moved:
            np.testing.assert_array_equal(to_numpy(v), before_all[id(v)], err_msg=v.path)
    assert any(np.abs(g).max() > 0 for g in grads)
    for p, velocity, g in zip(projections, part.projection_velocity.items, grads):  # Nesterov SGD, weight decay
        g = g + 5e-4 * before_all[id(p)]
        np.testing.assert_allclose(to_numpy(velocity), g, rtol=1e-5, atol=1e-9)  # from a zero momentum buffer
        np.testing.assert_allclose(to_numpy(p), before_all[id(p)] - 0.05 * (g + 0.9 * g), rtol=1e-5, atol=1e-8)


@pytest.mark.heavy
def test_fit_runs_the_meta_step_after_batches_0_n_2n_and_saves_its_state(tmp_path):
    d = distiller(meta_every=2)
    x, y = data()
    part = d.knowledge[0]
    calls = []
    step = part.outer_step
    part.outer_step = lambda *args: (calls.append(len(args[2])), step(*args))
    before = values(part.projections.weights)
    d.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert calls == [16, 16] * 2  # batches 0 and 2 of 4, every epoch
    assert all(not np.array_equal(a, b) for a, b in zip(values(part.projections.weights), before))
    d.save_weights(str(tmp_path / "w.weights.h5"))
    again = distiller(meta_every=2)
    again.train_on_batch({k: v[:16] for k, v in x.items()}, y[:16])  # built, then every value replaced
    again.load_weights(str(tmp_path / "w.weights.h5"))
    loaded = again.knowledge[0]
    for a, b in zip(values(part.projections.weights) + values(part.projection_velocity.items),
                    values(loaded.projections.weights) + values(loaded.projection_velocity.items)):
        np.testing.assert_array_equal(a, b)


def test_the_batch_read_again_is_the_batch_a_pipeline_trained_on():
    import tensorflow as tf

    x = np.arange(40, dtype="float32").reshape(10, 2, 2, 1)
    ds = keras_okd.data.pipeline(tf.data.Dataset.from_tensor_slices((x, np.arange(10) % 3)), 4, training=True, seed=2)
    clock = keras_okd.data.data_epoch(ds)
    clock.set_epoch(3)
    trained = [(inputs["index"].numpy(), labels.numpy()) for inputs, labels in ds]
    for b, (index, labels) in enumerate(trained):
        again_inputs, again_labels = batch_again(ds, None, None, 3, b)
        np.testing.assert_array_equal(again_inputs["index"], index)
        np.testing.assert_array_equal(again_labels, labels)
    arrays = ({"inputs": x, "index": np.arange(10)}, np.arange(10))
    first, second = batch_again(*arrays, 4, 1, 2), batch_again(*arrays, 4, 1, 2)
    np.testing.assert_array_equal(first[0]["index"], second[0]["index"])  # drawn from (epoch, batch): reproducible
    np.testing.assert_array_equal(first[0]["index"], first[1])
    assert len(set(first[0]["index"])) == 4
    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, step):
            return {"inputs": x[3 * step:3 * step + 3], "index": np.arange(3 * step, 3 * step + 3)}, np.arange(3)

    inputs, labels = batch_again(Batches(), None, None, 0, 2)
    np.testing.assert_array_equal(inputs["index"], [6, 7, 8])
    with pytest.raises(ValueError, match="batches again: pass a tf.data.Dataset, a keras.utils.PyDataset or arrays"):
        batch_again(iter([]), None, 4, 0, 0)


def test_config_round_trip_and_refusals():
    part = knowledge.LayerMutualContrastive(100, layers=("stage_1", "pool"), weighting="meta", meta_every=7,
                                            meta_steps=1, meta_learning_rate=0.02, meta_weight_decay=0.0)
    again = knowledge.LayerMutualContrastive.from_config(part.get_config())
    assert (again.weighting, again.meta_every, again.meta_steps, again.meta_learning_rate, again.meta_weight_decay,
            again.outer_every) == ("meta", 7, 1, 0.02, 0.0, 7)
    assert knowledge.LayerMutualContrastive(100).outer_every is None  # the default: uniform
    with pytest.raises(ValueError, match=r"weighting must be one of \('meta', 'uniform'\), got 'learned'"):
        knowledge.LayerMutualContrastive(100, weighting="learned")
    with pytest.raises(ValueError, match="meta_every must be an integer >= 1, got 0"):
        knowledge.LayerMutualContrastive(100, meta_every=0)
    with pytest.raises(ValueError, match="meta_learning_rate must be > 0 or None"):
        knowledge.LayerMutualContrastive(100, meta_learning_rate=0.0)
    uniform = distiller(weighting="uniform")
    assert not hasattr(uniform.knowledge[0], "projections")


@pytest.mark.heavy("jax")
@pytest.mark.skipif(BACKEND == "torch", reason="the torch step is eager unless jit_compile=True (torch.compile)")
def test_the_training_step_with_meta_weights_compiles():
    d = distiller(meta_every=2)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
              jit_compile=True if BACKEND == "tensorflow" else "auto")
    x, y = data()
    history = d.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    assert d.jit_compile is True and np.isfinite(history.history["loss"][-1])


@pytest.mark.heavy
def test_backup_and_restore_resumes_the_pair_weights_and_their_momentum(tmp_path):
    """An interrupted fit resumed with BackupAndRestore ends where an uninterrupted one does, the meta step's
    projections and momentum included (the meta batches are drawn by epoch and batch, the same on resuming)."""
    x, y = data()

    def run(callbacks):
        d = distiller(meta_every=1)
        d.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False, callbacks=callbacks)
        return d

    straight, resumed = straight_and_resumed(run, tmp_path / "backup", epoch=1, batch=0)
    for u, v in zip(straight.variables, resumed.variables):
        np.testing.assert_allclose(to_numpy(v), to_numpy(u), rtol=1e-4, atol=1e-5, err_msg=u.path)
    assert any("pair_weights" in v.path for v in resumed.variables)
