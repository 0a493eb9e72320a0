"""OKDDip (Chen et al., AAAI 2020): the two-level targets and losses against numpy (values, and gradients in each
target_gradient mode), the part's projections, the preset, and bad input."""

import keras
import numpy as np
import pytest
from conftest import gradient, to_numpy
from test_losses import np_kl, np_softmax

import keras_okd
from keras_okd import knowledge

RNG = np.random.default_rng(7)
B, M, C, F, D = 5, 4, 6, 8, 2
TAU = 3.0


def sample():
    z = (RNG.normal(size=(B, M, C)) * 2).astype("float32")
    h = RNG.normal(size=(B, M, F)).astype("float32")
    wq, wk = (RNG.normal(size=(2, F, D))).astype("float32")
    return z, h, wq, wk


def np_losses(z, h, wq, wk, tau=TAU, include_self=True):
    """OKDDip's per-peer losses in float64 numpy: attention aggregation for the auxiliary peers, mean for the leader."""
    z, h = z.astype("float64"), h.astype("float64")
    m = z.shape[1] - 1
    q, k = h[:, :m] @ wq, h[:, :m] @ wk
    energy = np.einsum("bad,bfd->baf", q, k)
    if not include_self:
        energy = np.where(np.eye(m, dtype=bool), -np.inf, energy)
    alpha = np.exp(energy - energy.max(-1, keepdims=True))
    alpha /= alpha.sum(-1, keepdims=True)
    targets = np.concatenate([np.einsum("baf,bfc->bac", alpha, z[:, :m]), z[:, :m].mean(1, keepdims=True)], 1)
    t, p = np_softmax(targets, tau), np_softmax(z, tau)
    return np.array([tau**2 * np.mean(np_kl(t[:, i], p[:, i])) for i in range(m + 1)]), t, p


def numeric_grad(f, x, eps=1e-4):
    x = x.astype("float64")
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        g[i] = (f(x + d) - f(x - d)) / (2 * eps)
    return g


def loss_of(mode, which, z, h, wq, wk):
    """The summed losses as a function of one argument (for the backend gradient)."""
    args = {"z": z, "h": h, "wq": wq, "wk": wk}

    def fn(v):
        a = {**args, which: v}
        return knowledge.okddip_losses(a["z"], a["h"], a["wq"], a["wk"], TAU, mode)
    return fn


@pytest.mark.parametrize("mode", ["attention", "all", "none"])
@pytest.mark.parametrize("include_self", [True, False])
def test_values_match_numpy_in_every_mode(mode, include_self):
    z, h, wq, wk = sample()
    want, _, _ = np_losses(z, h, wq, wk, include_self=include_self)
    got = knowledge.okddip_losses(z, h, wq, wk, TAU, mode, include_self=include_self)
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-7)
    logits, attention = knowledge.okddip_targets(z, h, wq, wk, mode, include_self)
    if not include_self:
        np.testing.assert_array_equal(np.diagonal(to_numpy(attention), axis1=1, axis2=2), 0.0)
    assert tuple(logits.shape) == (B, M, C) and tuple(attention.shape) == (B, M - 1, M - 1)
    np.testing.assert_allclose(to_numpy(attention).sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(logits)[:, -1], z[:, :-1].mean(1), rtol=1e-5, atol=1e-6)


@pytest.mark.heavy
def test_attention_mode_gradient_reaches_the_projections_only():
    z, h, wq, wk = sample()
    _, t, p = np_losses(z, h, wq, wk)
    # logits: only through each peer's own softmax, the target constant: tau (p - t) / B
    np.testing.assert_allclose(gradient(loss_of("attention", "z", z, h, wq, wk), z), TAU * (p - t) / B,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(gradient(loss_of("attention", "h", z, h, wq, wk), h), 0.0)
    for name, w in (("wq", wq), ("wk", wk)):
        want = numeric_grad(lambda v: np_losses(z, h, v if name == "wq" else wq, v if name == "wk" else wk)[0].sum(),
                            w)
        got = gradient(loss_of("attention", name, z, h, wq, wk), w)
        assert np.abs(want).max() > 1e-3
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-5, err_msg=name)


def test_all_mode_gradient_is_the_full_derivative_as_in_the_authors_code():
    z, h, wq, wk = sample()
    for name, x in (("z", z), ("h", h)):
        def f(v):
            return np_losses(v if name == "z" else z, v if name == "h" else h, wq, wk)[0].sum()
        np.testing.assert_allclose(gradient(loss_of("all", name, z, h, wq, wk), x), numeric_grad(f, x),
                                   rtol=2e-3, atol=2e-5, err_msg=name)


def test_none_mode_detaches_every_target():
    z, h, wq, wk = sample()
    _, t, p = np_losses(z, h, wq, wk)
    np.testing.assert_array_equal(gradient(loss_of("none", "wq", z, h, wq, wk), wq), 0.0)
    np.testing.assert_allclose(gradient(loss_of("none", "z", z, h, wq, wk), z), TAU * (p - t) / B,
                               rtol=1e-4, atol=1e-6)


def feature_shapes(m=M, width=F):
    return {"features": [(None, width)] * m, "shared_features": (None, 3)}


def test_part_owns_its_projections_and_returns_peer_losses():
    z, h, _, _ = sample()
    part = knowledge.DiversePeers(temperature=TAU, projection_factor=4)
    part.build_for_peers(M, C, feature_shapes())
    assert tuple(part.query_kernel.shape) == (F, F // 4) and len(part.trainable_weights) == 2
    limit = 1 / np.sqrt(F)  # PyTorch's default Linear initialisation, as the authors' code
    assert np.abs(to_numpy(part.query_kernel)).max() <= limit
    ctx = {"index": None, "labels": np.zeros(B, "int32"), "training": True, "sample_weight": None,
           "features": [h[:, i] for i in range(M)], "shared_features": h[:, 0, :3]}
    out = part.targets(keras.ops.convert_to_tensor(z), ctx)
    assert set(out) == {"peer_losses"}
    want, _, _ = np_losses(z, h, to_numpy(part.query_kernel), to_numpy(part.key_kernel))
    np.testing.assert_allclose(to_numpy(out["peer_losses"]), want, rtol=1e-5, atol=1e-7)
    clone = knowledge.DiversePeers.from_config(part.get_config())
    assert (clone.projection_factor, clone.target_gradient, clone.temperature) == (4, "attention", TAU)


@pytest.mark.parametrize("build, message", [
    (lambda: knowledge.DiversePeers().build_for_peers(2, C, feature_shapes(m=2)), "at least 3 peers"),
    (lambda: knowledge.DiversePeers().build_for_peers(3, C), "multi-branch"),
    (lambda: knowledge.DiversePeers().build_for_peers(
        3, C, {"features": [(None, 8), (None, 16), (None, 8)], "shared_features": (None, 3)}), "one width"),
    (lambda: knowledge.DiversePeers(target_gradient="some"), "target_gradient"),
    (lambda: knowledge.DiversePeers(projection_factor=0), "projection_factor"),
    (lambda: keras_okd.methods.okddip(keras_okd.models.multi_branch("simple_cnn", 2, input_shape=(8, 8, 1))),
     "at least 3 branches"),
    (lambda: keras_okd.methods.okddip([keras_okd.models.get("simple_cnn", input_shape=(8, 8, 1))] * 3),
     "multi-branch"),
])
def test_bad_input_is_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def branches(m=M):
    return keras_okd.models.multi_branch("simple_cnn", m, num_classes=10, input_shape=(8, 8, 1), width=4)


def test_preset_composes_the_authors_setting():
    d = keras_okd.methods.okddip(branches())
    (part,) = d.knowledge
    assert isinstance(part, knowledge.DiversePeers) and part.name == "okddip"
    assert (part.temperature, part.weight, part.projection_factor, part.target_gradient, part.include_self) == (
        3.0, 1.0, 8, "attention", True)
    assert keras_okd.methods.okddip(branches(), include_self=False).knowledge[0].include_self is False
    assert part.feature_dim == 32 and tuple(part.query_kernel.shape) == (32, 4)
    cb = keras_okd.callbacks.KnowledgeSchedule(d.schedules)
    assert cb.values(40) == {"okddip": pytest.approx(np.exp(-5 * 0.25))} and cb.values(80) == {"okddip": 1.0}
    assert {id(v) for v in part.trainable_weights} <= {id(v) for v in d.trainable_weights}
    assert keras_okd.methods.get("okddip") is keras_okd.methods.okddip


@pytest.mark.heavy
def test_okddip_trains_on_digits():
    (x, y), (x_val, y_val) = keras_okd.data.digits_arrays()
    d = keras_okd.methods.okddip(branches(), rampup_epochs=0)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    before = to_numpy(d.knowledge[0].query_kernel).copy()
    history = d.fit(x[:960], y[:960], validation_data=(x_val, y_val), batch_size=64, epochs=3, verbose=0).history
    leader = f"branch_{M - 1}_accuracy"
    assert history[leader][-1] > history[leader][0] + 0.05, history[leader]
    assert {"branch_0_okddip", f"branch_{M - 1}_okddip"} <= set(history) and np.isfinite(history["val_loss"]).all()
    assert np.abs(to_numpy(d.knowledge[0].query_kernel) - before).max() > 1e-6  # the attention learned


@pytest.mark.heavy
def test_okddip_deploys_the_leader_and_exports_it_plain(tmp_path):
    (x, y), _ = keras_okd.data.digits_arrays()
    d = keras_okd.methods.okddip(branches(), rampup_epochs=0)
    assert d.deploy_peer == M - 1
    logits = to_numpy(d.peer_model(M - 1)(x[:16]))
    want = np.exp(logits - logits.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    np.testing.assert_allclose(d.predict(x[:16], verbose=0), want, rtol=1e-5, atol=1e-6)
    path = str(tmp_path / "leader.keras")
    d.deployed_model().save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x[:16], verbose=0), want, rtol=1e-5, atol=1e-6)


@pytest.mark.heavy("tensorflow", "jax", "torch")
def test_okddip_saved_as_keras_loads_with_its_projections_and_predictions(tmp_path):
    """An okddip distiller saved whole (`.keras`) loads: the part rebuilt from its config builds its projections from
    the branches' features, then takes the saved values (before the fix, `load_model` raised in `build`)."""
    (x, y), _ = keras_okd.data.digits_arrays()
    d = keras_okd.methods.okddip(branches(3), rampup_epochs=4)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    d.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "okddip.keras"
    d.save(path)
    loaded = keras.saving.load_model(path)
    (part,) = loaded.knowledge
    assert isinstance(part, knowledge.DiversePeers) and part.feature_dim == 32 and loaded.deploy_peer == 2
    for name in ("query_kernel", "key_kernel"):
        np.testing.assert_array_equal(to_numpy(getattr(part, name)), to_numpy(getattr(d.knowledge[0], name)))
    assert loaded.schedules == {"okddip": [keras_okd.knowledge.RampUp(4)]}
    np.testing.assert_allclose(loaded.predict(x[:16], verbose=0), d.predict(x[:16], verbose=0), rtol=1e-5, atol=1e-6)
    assert int(to_numpy(loaded.optimizer.iterations)) == 2
