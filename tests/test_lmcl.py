"""L-MCL (Yang et al., TPAMI 2023) against an independent float64 numpy computation of its layer-wise loss, value and
gradient; its memory of one embedding per (network, layer) slot (only the batch's rows written, nothing when not
finite or not in training); the refusals; the preset trains through the distiller."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, gradient, tiny_student, to_numpy
from keras import ops
from test_feature_parts import as64, build, compiled, context, differences, numerical_gradient, random_features
from test_mcl import INDEX, LABELS, committed_state, losses, np_soft, np_supcon  # losses: for the same B and M

import keras_okd
from keras_okd import knowledge
from keras_okd.knowledge.features import lmcl as lmcl_module

B, M, L, N, K, D = 5, 3, 2, 12, 4, 8
S = M * L
LAYERS = ("q", "p")  # an image feature (pooled before its head) and a pooled one, per network
SHAPES = [{"q": (2, 2, 3), "p": (6,)}, {"q": (2, 2, 3), "p": (4,)}, {"q": (4, 4, 2), "p": (5,)}]
ROW_LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, -1, 2, 0, 1], "int32")  # one row never written (-1)


def make(**kwargs):
    options = dict(num_samples=N, layers=LAYERS, num_negatives=K, embedding_dim=D, seed=5, alpha=0.3, beta=0.7,
                   gamma=1.1, lam=0.9, temperature=0.5, kd_temperature=2.0)
    options.update(kwargs)
    part = build(lambda: knowledge.LayerMutualContrastive(**options), SHAPES)
    part.labels.assign(ROW_LABELS)
    for head in part.connectors:  # hidden units alive for every sample: no all-zero (unnormalisable) embedding
        head.layers[0].bias.assign(np.ones(D, "float32"))
    return part


def fix_keys(part, drawn):
    part.draw_negatives = lambda batch_size, training: ops.convert_to_tensor(drawn, dtype="int32")


# ------------------------------------------------------------------------------------------ numpy, float64, loops
def np_embed(part, slot, x):
    h = x.mean(axis=(1, 2)) if x.ndim == 4 else x.reshape(len(x), -1)
    for position, layer in enumerate(part.connectors[slot].layers):
        w, b = (to_numpy(v).astype("float64") for v in layer.weights)
        h = h @ w + b
        if position == 0:
            h = np.maximum(h, 0.0)
    return h / np.linalg.norm(h, axis=1, keepdims=True)


def np_logits(part, feats, memory, drawn, index=INDEX):
    """(B, S, S, K + 1): slot a's anchor against slot m's memory, its own row first, then the drawn keys."""
    tau = part.temperature
    v = [np_embed(part, i * L + k, feats[i][name]) for i in range(M) for k, name in enumerate(LAYERS)]
    out = np.zeros((B, S, S, K + 1))
    for a in range(S):
        for m in range(S):
            for n in range(B):
                out[n, a, m, 0] = v[a][n] @ memory[index[n], m] / tau
                out[n, a, m, 1:] = memory[drawn[n], m] @ v[a][n] / tau
    return out


def np_loss(logits, positives, slot_peer, weights, alpha, beta, gamma, lam, t, scale=1.0, teacher=None):
    """The module's L_i: for every ordered pair of slots of different networks, the code's weighted terms. The soft
    terms' targets come from `teacher` (default: `logits`): a gradient holds them fixed, as the part detaches them."""
    teacher = logits if teacher is None else teacher
    slots, peers = len(slot_peer), max(slot_peer) + 1
    icl_positives = np.concatenate([np.ones((len(logits), 1)), positives], axis=1)
    out = np.zeros(peers)
    for a in range(slots):
        for b in range(slots):
            if slot_peer[a] == slot_peer[b]:
                continue
            w = 2.0 if weights is None else weights[:, a, b] + weights[:, b, a]
            vcl = np_supcon(logits[:, a, a, 1:], positives)
            soft_vcl = np_soft(logits[:, a, a, 1:], teacher[:, b, b, 1:], t)
            icl = np_supcon(logits[:, a, b], icl_positives)
            soft_icl = np_soft(logits[:, a, b], teacher[:, b, a], t)
            out[slot_peer[a]] += np.mean(w * (alpha * vcl + gamma * soft_vcl + beta * icl + lam * soft_icl))
    return scale * out


def np_lmcl(part, feats, memory, drawn, reduction="sum"):
    positives = (ROW_LABELS[drawn] == LABELS[:, None]).astype("float64")
    scale = 1.0 if reduction == "sum" else 1.0 / (M - 1)
    slot_peer = [i for i in range(M) for _ in range(L)]
    return np_loss(np_logits(part, feats, memory, drawn), positives, slot_peer, None, part.alpha, part.beta,
                   part.gamma, part.lam, part.kd_temperature, scale)


# ------------------------------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_lmcl_value_and_gradient_match_numpy(reduction):
    part = make(reduction=reduction)
    features = random_features(SHAPES, seed=41)
    drawn = np.random.default_rng(5).integers(0, N, size=(B, K)).astype("int32")
    fix_keys(part, drawn)
    memory = to_numpy(part.memory).astype("float64")
    assert memory.shape == (N, S, D)
    counts = (ROW_LABELS[drawn] == LABELS[:, None]).sum(1)
    assert 0 in counts and counts.max() > 1  # anchors without, with one and with several positives

    got = to_numpy(compiled(lambda feats: losses(part, feats))(features))
    want = np_lmcl(part, as64(features), memory, drawn, reduction)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    report = [f"value {differences(got, want)[1]:.2e}"]
    for name in LAYERS:  # network 0's image layer and pooled layer, each through its own head

        def backend_loss(x, name=name):
            return losses(part, [{**features[0], name: x}] + features[1:])[0]

        def numpy_loss(x, name=name):
            return np_lmcl(part, [{**as64(features)[0], name: x}] + as64(features)[1:], memory, drawn,
                           reduction)[0]

        g = gradient(compiled(backend_loss), features[0][name])
        g_want = numerical_gradient(numpy_loss, features[0][name])
        np.testing.assert_allclose(g, g_want, rtol=1e-4, atol=1e-5 * np.abs(g_want).max())
        report.append(f"gradient {name} {differences(g, g_want)[1]:.2e}")
    other = gradient(compiled(lambda x: losses(part, [features[0], {**features[1], "p": x}, features[2]])[0]),
                     features[1]["p"])
    assert np.all(other == 0.0)  # the other networks' distributions and every memory row are detached
    print(f"\n{BACKEND} lmcl ({reduction}) max rel: " + "; ".join(report))


def test_pure_loss_with_pair_weights_matches_numpy():
    """The code's per-sample layer-pair weights (w(a, b) + w(b, a) on each pair's terms), value and gradient, with
    respect to the scores and to the weights (the meta step differentiates through them)."""
    rng = np.random.default_rng(6)
    slot_peer = [0, 0, 1, 2]
    logits = rng.normal(size=(B, 4, 4, K + 1)).astype("float32")
    positives = (rng.random((B, K)) < 0.4).astype("float32")
    weights = rng.random((B, 4, 4)).astype("float32")
    params = dict(alpha=0.3, beta=0.7, gamma=1.1, lam=0.9, kd_temperature=2.0)

    def backend(x, w=weights):
        return lmcl_module.layer_mutual_contrastive(x, positives, slot_peer, w, scale=0.5, **params)

    def numpy(x, teacher=None):
        return np_loss(x, positives.astype("float64"), slot_peer, weights.astype("float64"), params["alpha"],
                       params["beta"], params["gamma"], params["lam"], params["kd_temperature"], 0.5, teacher)

    got, want = to_numpy(compiled(backend)(logits)), numpy(logits.astype("float64"))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    g = gradient(compiled(lambda x: backend(x)[1]), logits)
    g_want = numerical_gradient(lambda x: numpy(x, logits.astype("float64"))[1], logits)
    np.testing.assert_allclose(g, g_want, rtol=1e-4, atol=1e-5 * np.abs(g_want).max())
    gw = gradient(compiled(lambda w: backend(logits, w)), weights)

    def numpy_of_weights(w):
        return np_loss(logits.astype("float64"), positives.astype("float64"), slot_peer, w, params["alpha"],
                       params["beta"], params["gamma"], params["lam"], params["kd_temperature"], 0.5).sum()

    gw_want = numerical_gradient(numpy_of_weights, weights)
    np.testing.assert_allclose(gw, gw_want, rtol=1e-4, atol=1e-5 * np.abs(gw_want).max())
    assert np.all(gw[:, [0, 1], [0, 1]] == 0.0) and np.all(gw[:, 0, 1] == 0.0)  # slots of one network: unused
    print(f"\n{BACKEND} layer_mutual_contrastive with weights max rel: value {differences(got, want)[1]:.2e}; "
          f"gradient {differences(g, g_want)[1]:.2e}; weights' gradient {differences(gw, gw_want)[1]:.2e}")


def test_pure_loss_refuses_bad_input():
    logits = np.zeros((B, 4, 4, K + 1), "float32")
    positives = np.zeros((B, K), "float32")
    with pytest.raises(ValueError, match=r"slot_peer names 3 slots but the logits have shape \(5, 4, 4, 5\)"):
        lmcl_module.layer_mutual_contrastive(logits, positives, [0, 1, 1])
    with pytest.raises(ValueError, match=r"networks 0 .. M-1 \(M >= 2\), each at least once; got \[0, 0, 0, 0\]"):
        lmcl_module.layer_mutual_contrastive(logits, positives, [0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"networks 0 .. M-1.*got \[0, 0, 2, 2\]"):
        lmcl_module.layer_mutual_contrastive(logits, positives, [0, 0, 2, 2])
    with pytest.raises(ValueError, match=r"pair_weights must be \(batch, 4, 4\) or \(4, 4\).*got shape \(5, 4\)"):
        lmcl_module.layer_mutual_contrastive(logits, positives, [0, 0, 1, 1], np.ones((B, 4), "float32"))


def test_lmcl_state_writes_only_its_rows_of_every_slot():
    part = make()
    features = random_features(SHAPES, seed=43)
    memory_before, memory = committed_state(part, features)
    anchors = np.stack([np_embed(part, i * L + k, features[i][name].astype("float64"))
                        for i in range(M) for k, name in enumerate(LAYERS)], axis=1)  # (B, S, D)
    expected = 0.5 * memory_before[INDEX].astype("float64") + 0.5 * anchors
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    np.testing.assert_allclose(memory[INDEX], expected, rtol=1e-5, atol=1e-6)


def test_lmcl_config_round_trip_and_refusals():
    part = knowledge.LayerMutualContrastive(100, layers=("stage_1", "pool"), alpha=0.2, kd_temperature=4.0,
                                            num_negatives=64)
    again = knowledge.LayerMutualContrastive.from_config(part.get_config())
    assert (again.feature_layers, again.alpha, again.kd_temperature, again.num_negatives, again.name) == (
        ("stage_1", "pool"), 0.2, 4.0, 64, "lmcl")
    assert again.slots_per_peer == 2
    with pytest.raises(ValueError, match="lam must be >= 0, got -1"):
        knowledge.LayerMutualContrastive(100, lam=-1)
    uneven = knowledge.LayerMutualContrastive(10, layers=[("a", "b"), ("a",)], num_negatives=2, embedding_dim=4)
    with pytest.raises(ValueError, match=r"the peers name different numbers of layers \(\[2, 1\]\)"):
        uneven.build_for_peers(2, 10, {"peer_features": [{"a": (None, 3), "b": (None, 3)}, {"a": (None, 3)}]})
    sequence = knowledge.LayerMutualContrastive(10, layers=("a",), num_negatives=2, embedding_dim=4)
    with pytest.raises(ValueError, match=r"L-MCL reads pooled \(batch, features\) or image .* got shape \(None, 3, 4\)"):
        sequence.build_for_peers(2, 10, {"peer_features": [{"a": (None, 3, 4)}, {"a": (None, 3, 4)}]})


def test_lmcl_preset_defaults_and_refusals():
    with keras.StatelessScope(initialize_variables=False):
        pair = [keras_okd.models.get("resnet20", num_classes=100) for _ in range(2)]
        distiller = keras_okd.methods.lmcl(pair, num_train_samples=50_000)
    part = distiller.knowledge[0]
    assert isinstance(part, knowledge.LayerMutualContrastive)
    assert (part.alpha, part.beta, part.gamma, part.lam, part.temperature, part.kd_temperature) == (
        0.1, 0.1, 1.0, 1.0, 0.1, 3.0)
    assert (part.embedding_dim, part.num_negatives, part.momentum, part.reduction) == (128, 8192, 0.5, "sum")
    assert part.layers_for_peer(1) == ("stage_1", "stage_2", "pool") and part.needs_index
    assert tuple(part.memory.shape) == (50_000, 6, 128)
    with pytest.raises(ValueError, match="independent students"):
        keras_okd.methods.lmcl(keras_okd.models.multi_branch("simple_cnn", 2, num_classes=10, input_shape=(8, 8, 1),
                                                             width=4), num_train_samples=10)
    with pytest.raises(ValueError, match=r"do not have the zoo's layer names \(stage_k, pool\); name the layers"):
        keras_okd.methods.lmcl([tiny_student(name=f"s{i}") for i in range(2)], num_train_samples=10)


@pytest.mark.heavy
def test_lmcl_trains_end_to_end_and_exports_plain_students():
    (x, y), _ = keras_okd.data.digits_arrays()
    x, y = x[:96], y[:96]
    keras.utils.set_random_seed(0)
    pair = [tiny_student(name=f"s{i}") for i in range(2)]
    layers = [[next(layer.name for layer in s.layers if isinstance(layer, kind))
               for kind in (keras.layers.ReLU, keras.layers.Flatten)] for s in pair]
    d = keras_okd.methods.lmcl(pair, num_train_samples=128, layers=layers, num_negatives=16, embedding_dim=8, seed=3)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    part = d.knowledge[0]
    before = to_numpy(part.memory).copy()
    history = d.fit({"inputs": x, "index": np.arange(96)}, y, epochs=3, batch_size=32, verbose=0, shuffle=False)
    logs = history.history
    assert all(np.isfinite(logs[f"student_{i}_lmcl"]).all() for i in range(2))
    assert logs["loss"][-1] < logs["loss"][0]
    changed = np.nonzero(np.any(to_numpy(part.memory) != before, axis=(1, 2)))[0]
    np.testing.assert_array_equal(changed, np.arange(96))
    assert to_numpy(part.memory).shape == (128, 4, 8)
    assert d.students[0].count_params() == tiny_student().count_params()
