"""L-MCL's auxiliary branches and aggregator: `auxiliary_classification` against float64 numpy (value, and gradient
with the aggregated logits held fixed on the KL's target side), the branches `auxiliary_branch` builds (parameters,
fresh weights, refusals), the part's wiring against numpy on the branches' and aggregators' own weights, training,
saving and the refusals."""

import keras
import numpy as np
import pytest
from conftest import gradient, to_numpy

import keras_okd
from keras_okd import knowledge, models
from keras_okd.knowledge.features.lmcl import auxiliary_classification

T = 2.5


# ---------------------------------------------------------------------------------------------- float64 numpy
def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_auxiliary(labels, z, w, t, target=None):
    """Per network: the branches' CE, the aggregated logits' CE, T^2 sum_j KL(softmax(a_j / T) || softmax(z_i / T)),
    with loops. `target`: the aggregated logits on the KL's target side (default: computed from z and w)."""
    batch, peers, stages, _ = z.shape
    a = np.einsum("bms,bmsc->bmc", w, z)
    target = a if target is None else target
    out = np.zeros(peers)
    for i in range(peers):
        for s in range(stages - 1):
            out[i] += -np.mean(np_log_softmax(z[:, i, s])[np.arange(batch), labels])
        out[i] += -np.mean(np_log_softmax(a[:, i])[np.arange(batch), labels])
        for j in range(peers):
            p_t = np.exp(np_log_softmax(target[:, j] / t))
            kl = np.sum(p_t * (np.log(p_t) - np_log_softmax(z[:, i, -1] / t)), axis=-1)
            out[i] += t * t * np.mean(kl)
    return out


def case(seed=0, batch=4, peers=3, stages=3, classes=5):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(batch, peers, stages, classes)) * 2.0
    w = rng.dirichlet(np.ones(stages), size=(batch, peers))
    return rng.integers(0, classes, batch), z, w


def test_auxiliary_classification_value_and_gradient_match_numpy():
    labels, z, w = case()
    got = to_numpy(auxiliary_classification(labels, z.astype("float32"), w.astype("float32"), T))
    np.testing.assert_allclose(got, np_auxiliary(labels, z, w, T), rtol=1e-5)

    fixed = np.einsum("bms,bmsc->bmc", w, z)  # the KL's target side is detached: held at its value
    h = 1e-6
    for name, x in (("z", z), ("w", w)):
        fn = (lambda v: auxiliary_classification(labels, v, w.astype("float32"), T)) if name == "z" else \
            (lambda v: auxiliary_classification(labels, z.astype("float32"), v, T))
        got = gradient(fn, x.astype("float32"))
        want = np.zeros_like(x)
        for position in np.ndindex(x.shape):
            up, down = x.copy(), x.copy()
            up[position] += h
            down[position] -= h
            args = (lambda v: (v, w)) if name == "z" else (lambda v: (z, v))
            want[position] = (np_auxiliary(labels, *args(up), T, fixed).sum()
                              - np_auxiliary(labels, *args(down), T, fixed).sum()) / (2 * h)
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-5, err_msg=name)


def test_auxiliary_classification_weighs_the_samples():
    labels, z, w = case(1, batch=3, peers=2, stages=2)
    sample_weight = np.array([1.0, 0.0, 2.0], "float32")
    got = to_numpy(auxiliary_classification(labels, z.astype("float32"), w.astype("float32"), T, sample_weight))
    kept = [0, 2, 2]  # the code's batch mean, each sample counted by its weight: sample 2 twice, sample 1 not at all
    np.testing.assert_allclose(got, np_auxiliary(labels[kept], z[kept], w[kept], T), rtol=1e-5)


# ------------------------------------------------------------------------------------------------ the branches
def student(name, width=4):
    """conv-BN-ReLU ("r1"), conv-BN-ReLU, flatten ("flat"), dense: a branch on r1 holds a batch normalisation."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(width, 3, padding="same")(inputs)
    x = keras.layers.ReLU(name="r1")(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(width, 3, padding="same")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn2")(x))
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name=name)


def test_auxiliary_branch_is_a_fresh_copy_of_the_rest_of_the_network():
    net = models.get("resnet20", num_classes=100)
    for layer, kept in (("stage_1", ("stage2_", "stage3_", "logits")), ("stage_2", ("stage3_", "logits"))):
        branch = models.auxiliary_branch(net, layer, name=f"aux_{layer}")
        later = sum(int(np.prod(v.shape)) for v in net.weights if v.path.split("/")[0].startswith(kept))
        assert branch.count_params() == later
        assert tuple(branch.inputs[0].shape) == tuple(net.get_layer(layer).output.shape)
        assert all(each.name.startswith(f"aux_{layer}_") for each in branch.layers[1:])
        own = {v.path: to_numpy(v) for v in net.weights if v.path.startswith(kept)}
        copies = {v.path.replace(f"aux_{layer}_", "", 1): to_numpy(v) for v in branch.weights}
        assert sorted(copies) == sorted(own)  # the same layers, new draws of their kernels
        for path, value in own.items():
            assert value.shape == copies[path].shape
            if path.endswith("kernel"):
                assert not np.allclose(value, copies[path]), path


def test_auxiliary_branch_refusals():
    net = student("s")
    with pytest.raises(ValueError, match="has no layer 'stage_9'"):
        models.auxiliary_branch(net, "stage_9")
    with pytest.raises(ValueError, match="has no layer 'pool'"):
        models.auxiliary_branch(net, "r1")  # the zoo's default features name: this network calls them "flat"

    with pytest.raises(ValueError, match=r"auxiliary=True needs two or more layers per student; got \('flat',\)"):
        keras_okd.methods.lmcl([student("a"), student("b")], num_train_samples=10, layers="flat", auxiliary=True)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.inner, self.pool = keras.layers.Dense(4, name="stage_1"), keras.layers.Dense(4, name="pool")

        def call(self, x):
            return self.pool(self.inner(x))

    sub = Subclassed()
    sub(np.zeros((1, 2), "float32"))
    with pytest.raises(ValueError, match="could not be copied layer by layer"):
        models.auxiliary_branch(sub, "stage_1")

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    skip = keras.layers.Add(name="pool")([keras.layers.Dense(4, name="inner")(hidden), inputs])
    with pytest.raises(ValueError, match="need more than its output .a connection skips over it"):
        models.auxiliary_branch(keras.Model(inputs, keras.layers.Dense(3)(skip)), "hidden")


# ------------------------------------------------------------------------------------------ through the distiller
def distiller(**kwargs):
    keras.utils.set_random_seed(0)
    d = keras_okd.methods.lmcl([student(f"s{i}") for i in range(2)], num_train_samples=64, layers=("r1", "flat"),
                               num_negatives=8, embedding_dim=8, seed=3, auxiliary=True, **kwargs)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return d


def data(n=64):
    (x, y), _ = keras_okd.data.digits_arrays()
    return {"inputs": x[:n], "index": np.arange(n)}, y[:n]


def np_dense(layer, x, relu=False):
    w, b = (to_numpy(v).astype("float64") for v in layer.weights)
    return np.maximum(x @ w + b, 0.0) if relu else x @ w + b


def test_the_part_feeds_each_layer_to_its_branch_and_the_stages_to_the_aggregator():
    d = distiller()
    x, y = data(16)
    out = d(x, training=False)
    part = d.knowledge[0]
    context = {"index": x["index"], "labels": y, "training": False, "peer_features": out["peer_features"]}
    pooled, stages = part.slot_features(out["peer_logits"], context)
    got = to_numpy(part.targets(out["peer_logits"], context).losses["auxiliary"])

    z, w = [], []
    for i, branch in enumerate(part.auxiliary.items):  # one branch per network, on r1
        features, logits = (to_numpy(t).astype("float64") for t in branch(out["peer_features"][i]["r1"]))
        flat = to_numpy(out["peer_features"][i]["flat"]).astype("float64")
        np.testing.assert_allclose(to_numpy(pooled[2 * i]), features, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(to_numpy(pooled[2 * i + 1]), flat, rtol=1e-6)
        hidden_layer, out_layer = part.aggregators[i].layers[:2]
        scores = np_dense(out_layer, np_dense(hidden_layer, np.concatenate([features, flat], axis=1), relu=True))
        w.append(np.exp(scores - scores.max(1, keepdims=True)) / np.exp(scores - scores.max(1, keepdims=True)).sum(
            1, keepdims=True))
        z.append(np.stack([logits, to_numpy(out["peer_logits"][:, i]).astype("float64")], axis=1))
    z, w = np.stack(z, axis=1), np.stack(w, axis=1)
    np.testing.assert_allclose(to_numpy(stages), z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, np_auxiliary(y, z, w, part.kd_temperature).sum(), rtol=1e-4)


def test_training_moves_the_branches_and_aggregators_and_exports_plain_students(tmp_path):
    d = distiller()
    x, y = data()
    part = d.knowledge[0]
    owned = [v for m in part.auxiliary.items + part.aggregators.items for v in m.weights]
    before = [to_numpy(v).copy() for v in owned]
    history = d.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
    assert np.isfinite(history.history["lmcl_auxiliary"]).all() and history.history["lmcl_auxiliary"][0] > 0
    for v, b in zip(owned, before):  # kernels, biases, and the branches' batch-norm statistics
        assert not np.array_equal(to_numpy(v), b), v.path
    assert [s.count_params() for s in d.students] == [student("t").count_params()] * 2

    d.save(str(tmp_path / "d.keras"))
    again = keras.saving.load_model(str(tmp_path / "d.keras"))
    loaded = again.knowledge[0]
    assert len(loaded.auxiliary) == 2 and loaded.loss_names == ("auxiliary",)
    for u, v in zip(owned, [v for m in loaded.auxiliary.items + loaded.aggregators.items for v in m.weights]):
        np.testing.assert_array_equal(to_numpy(u), to_numpy(v))
    context = {"index": x["index"][:8], "labels": y[:8], "training": False}
    for model, name in ((d, "trained"), (again, "loaded")):
        out = model({k: v[:8] for k, v in x.items()}, training=False)
        context[name] = to_numpy(model.knowledge[0].targets(
            out["peer_logits"], {**context, "peer_features": out["peer_features"]}).losses["auxiliary"])
    np.testing.assert_allclose(context["loaded"], context["trained"], rtol=1e-6)


@pytest.mark.heavy
def test_the_meta_step_runs_with_the_branches():
    d = distiller(weighting="meta", meta_every=1)
    x, y = data(16)
    part = d.knowledge[0]
    d.train_on_batch(x, y)
    before = [to_numpy(v).copy() for v in part.projections.weights]
    part.outer_step(d, x, y)
    assert all(not np.array_equal(to_numpy(v), b) for v, b in zip(part.projections.weights, before))


def test_the_part_refuses_branches_that_do_not_fit():
    nets = [student(f"s{i}") for i in range(2)]
    shapes = {"peer_features": [{"r1": (None, 8, 8, 4), "flat": (None, 256)}] * 2}
    with pytest.raises(ValueError, match=r"one list per network, each with one branch per layer but the last"):
        knowledge.LayerMutualContrastive(10, layers=("r1", "flat"), auxiliary_branches=[[], []])
    with pytest.raises(ValueError, match="every auxiliary branch must be a keras.Model"):
        knowledge.LayerMutualContrastive(10, layers=("r1", "flat"), auxiliary_branches=[["r1"], ["r1"]])
    one = [[models.auxiliary_branch(nets[0], "r1", features="flat")]]
    part = knowledge.LayerMutualContrastive(10, layers=("r1", "flat"), num_negatives=4, auxiliary_branches=one)
    with pytest.raises(ValueError, match="2 networks contrasting 2 layers need 2 lists of 1"):
        part.build_for_peers(2, 10, shapes)
    wide = student("wide", width=6)
    wrong = [[models.auxiliary_branch(n, "r1", features="flat", name=f"a{i}")] for i, n in enumerate([wide, nets[1]])]
    part = knowledge.LayerMutualContrastive(10, layers=("r1", "flat"), num_negatives=4, auxiliary_branches=wrong)
    with pytest.raises(ValueError, match=r"takes \(8, 8, 6\) and gives 10 logits, but layer 'r1' gives \(8, 8, 4\)"):
        part.build_for_peers(2, 10, shapes)
    config = knowledge.LayerMutualContrastive(10, layers=("r1", "flat"), auxiliary_branches=[
        [models.auxiliary_branch(n, "r1", features="flat", name=f"a{i}")] for i, n in enumerate(nets)]).get_config()
    rebuilt = knowledge.LayerMutualContrastive.from_config(config)
    assert [b.name for b in rebuilt.auxiliary.items] == ["a0", "a1"] and rebuilt.branches_per_peer == 1
