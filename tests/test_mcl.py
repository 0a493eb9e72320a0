"""MCL (Yang et al., AAAI 2022) against an independent float64 numpy computation of its four terms, value and
gradient; its memory of embeddings and labels (only the batch's rows written, nothing when not finite or not in
training, saved and restored); the preset trains through the distiller."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, gradient, straight_and_resumed, tiny_student, to_numpy
from keras import ops
from test_feature_parts import as64, build, compiled, context, differences, numerical_gradient, random_features

import keras_okd
from keras_okd import knowledge
from keras_okd.knowledge.features import mcl as mcl_module

B, M, N, K, D = 5, 3, 12, 4, 8
SHAPES = [{"p": (6,)}, {"p": (4,)}, {"p": (2, 2, 3)}]
INDEX = np.array([3, 0, 7, 11, 5], "int32")
LABELS = np.array([0, 1, 2, 1, 0], "int32")


def make(**kwargs):
    options = dict(num_samples=N, layers="p", num_negatives=K, embedding_dim=D, seed=5, alpha=0.3, beta=0.7,
                   gamma=1.1, lam=0.9, temperature=0.5, kd_temperature=2.0)
    options.update(kwargs)
    part = build(lambda: knowledge.MutualContrastive(**options), SHAPES)
    # Row labels: three classes and one row never written (-1), so anchors have 0, 1 or several positives.
    part.labels.assign(np.array([0, 1, 2, 0, 1, 2, 0, 1, -1, 2, 0, 1], "int32"))
    for head in part.connectors:  # hidden units alive for every sample: no all-zero (unnormalisable) embedding
        head.layers[0].bias.assign(np.ones(D, "float32"))
    return part


def fix_keys(part, drawn):
    part.draw_negatives = lambda batch_size, training: ops.convert_to_tensor(drawn, dtype="int32")


def np_embed(part, i, x):
    h = x.reshape(B, -1)
    for position, layer in enumerate(part.connectors[i].layers):
        w, b = (to_numpy(v).astype("float64") for v in layer.weights)
        h = h @ w + b
        if position == 0:
            h = np.maximum(h, 0.0)
    return h / np.linalg.norm(h, axis=1, keepdims=True)


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_supcon(logits, positives):  # -(1/|P|) sum_P log softmax, 0 without positives
    return -(positives * np_log_softmax(logits)).sum(-1) / np.maximum(positives.sum(-1), 1)


def np_soft(student, teacher, t):  # T^2 KL(softmax(teacher/T) || softmax(student/T))
    lt, ls = np_log_softmax(teacher / t), np_log_softmax(student / t)
    return t * t * (np.exp(lt) * (lt - ls)).sum(-1)


def np_mcl(part, feats, memory, row_labels, drawn, index=INDEX, labels=LABELS, reduction="sum"):
    """MCL's per-network loss from the module's equations, float64, loops over networks and samples."""
    tau, t = part.temperature, part.kd_temperature
    v = [np_embed(part, i, feats[i]["p"]) for i in range(M)]
    positives = (row_labels[drawn] == labels[:, None]).astype("float64")  # (B, K)

    def vcl_logits(a, m):  # anchor a against memory m over the drawn keys
        return np.einsum("bd,bkd->bk", v[a], memory[drawn, m]) / tau

    def icl_logits(a, m):  # anchor a against memory m: the sample's own row first, then the drawn keys
        own = np.einsum("bd,bd->b", v[a], memory[index, m])[:, None] / tau
        return np.concatenate([own, vcl_logits(a, m)], axis=1)

    icl_positives = np.concatenate([np.ones((B, 1)), positives], axis=1)
    scale = 1.0 if reduction == "sum" else 1.0 / (M - 1)
    out = []
    for a in range(M):
        others = [m for m in range(M) if m != a]
        vcl = np_supcon(vcl_logits(a, a), positives).mean()
        soft_vcl = sum(np_soft(vcl_logits(a, a), vcl_logits(m, m), t).mean() for m in others)
        icl = sum(np_supcon(icl_logits(a, m), icl_positives).mean() for m in others)
        soft_icl = sum(np_soft(icl_logits(a, m), icl_logits(m, a), t).mean() for m in others)
        out.append(part.alpha * vcl + scale * (part.gamma * soft_vcl + part.beta * icl + part.lam * soft_icl))
    return np.array(out)


def losses(part, features, **kwargs):
    kwargs.setdefault("index", INDEX)
    with keras.StatelessScope():
        ctx = context(features, **kwargs)
        ctx["labels"] = LABELS
        return part.targets(np.zeros((B, M, 10), "float32"), ctx)["peer_losses"]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_mcl_value_and_gradient_match_numpy(reduction):
    part = make(reduction=reduction)
    features = random_features(SHAPES, seed=31)
    drawn = np.random.default_rng(3).integers(0, N, size=(B, K)).astype("int32")
    fix_keys(part, drawn)
    memory = to_numpy(part.memory).astype("float64")
    row_labels = to_numpy(part.labels)
    counts = (row_labels[drawn] == LABELS[:, None]).sum(1)
    assert 0 in counts and counts.max() > 1  # anchors without, with one and with several positives

    got = to_numpy(compiled(lambda feats: losses(part, feats))(features))
    want = np_mcl(part, as64(features), memory, row_labels, drawn, reduction=reduction)
    np.testing.assert_allclose(got, want, rtol=1e-5)

    def backend_loss(x):
        return losses(part, [{"p": x}] + features[1:])[0]

    def numpy_loss(x):
        return np_mcl(part, [{"p": x}] + as64(features)[1:], memory, row_labels, drawn, reduction=reduction)[0]

    g = gradient(compiled(backend_loss), features[0]["p"])
    g_want = numerical_gradient(numpy_loss, features[0]["p"])
    np.testing.assert_allclose(g, g_want, rtol=1e-4, atol=1e-5 * np.abs(g_want).max())
    other = gradient(compiled(lambda x: losses(part, [features[0], {"p": x}, features[2]])[0]),
                              features[1]["p"])
    assert np.all(other == 0.0)  # the other networks' distributions and every memory row are detached
    vd, gd = differences(got, want), differences(g, g_want)
    print(f"\n{BACKEND} mcl ({reduction}): value max abs {vd[0]:.2e} rel {vd[1]:.2e}; gradient max abs {gd[0]:.2e} "
          f"rel {gd[1]:.2e}")


def test_each_weight_switches_its_own_term():
    """With one weight at a time, the loss is that term alone (each term is pinned by the numpy test above)."""
    features = random_features(SHAPES, seed=32)
    drawn = np.random.default_rng(4).integers(0, N, size=(B, K)).astype("int32")
    totals = []
    for weights in ({"alpha": 1.0}, {"beta": 1.0}, {"gamma": 1.0}, {"lam": 1.0}):
        part = make(**{"alpha": 0.0, "beta": 0.0, "gamma": 0.0, "lam": 0.0, **weights})
        fix_keys(part, drawn)
        got = to_numpy(losses(part, features))
        want = np_mcl(part, as64(features), to_numpy(part.memory).astype("float64"), to_numpy(part.labels), drawn)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        assert np.all(got > 0)
        totals.append(got)
    assert len({round(float(t[0]), 6) for t in totals}) == 4


def test_pure_losses():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]], "float32")
    positives = np.array([[1, 0, 1], [0, 0, 0]], "float32")
    np.testing.assert_allclose(to_numpy(mcl_module.supervised_contrastive(logits, positives)),
                               np_supcon(logits.astype("float64"), positives), rtol=1e-6)
    teacher = np.array([[0.3, -1.0, 2.0], [1.0, 0.0, -1.0]], "float32")
    np.testing.assert_allclose(to_numpy(mcl_module.soft_contrastive(logits, teacher, 3.0)),
                               np_soft(logits.astype("float64"), teacher.astype("float64"), 3.0), rtol=1e-5)


def committed_state(part, features):
    """Step `part` on `features` (indices INDEX, labels LABELS): evaluation and a non-finite training step write
    nothing; a finite one writes exactly the batch's rows and labels. Returns (memory before, memory after)."""
    memory_before, labels_before = to_numpy(part.memory), to_numpy(part.labels)
    ctx = context(features, training=False, index=INDEX)
    ctx["labels"] = LABELS
    assert "state" not in part.targets(np.zeros((B, M, 10), "float32"), ctx)  # evaluation writes nothing
    ctx = context(features, index=INDEX)
    ctx["labels"] = LABELS
    out = part.targets(np.zeros((B, M, 10), "float32"), ctx)
    part.commit(out["state"], np.array(False))  # a non-finite step writes nothing
    np.testing.assert_array_equal(to_numpy(part.memory), memory_before)
    np.testing.assert_array_equal(to_numpy(part.labels), labels_before)
    part.commit(out["state"], np.array(True))
    memory = to_numpy(part.memory)
    changed = np.nonzero(np.any(memory != memory_before, axis=(1, 2)))[0]
    np.testing.assert_array_equal(changed, np.sort(INDEX))
    want_labels = labels_before.copy()
    want_labels[INDEX] = LABELS
    np.testing.assert_array_equal(to_numpy(part.labels), want_labels)
    return memory_before, memory


def test_mcl_state_writes_only_its_rows_and_labels():
    part = make()
    features = random_features(SHAPES, seed=33)
    memory_before, memory = committed_state(part, features)
    anchors = np.stack([np_embed(part, i, features[i]["p"].astype("float64")) for i in range(M)], axis=1)
    expected = 0.5 * memory_before[INDEX].astype("float64") + 0.5 * anchors
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    np.testing.assert_allclose(memory[INDEX], expected, rtol=1e-5, atol=1e-6)


def test_mcl_memory_labels_and_keys_survive_save_and_load():
    part = make()
    ctx = context(random_features(SHAPES, seed=34), index=INDEX)
    ctx["labels"] = LABELS
    part.commit(part.targets(np.zeros((B, M, 10), "float32"), ctx)["state"], np.array(True))
    store = {}
    part.save_own_variables(store)  # what Keras's save_weights and BackupAndRestore write for the part itself
    restored = make(seed=99)
    restored.labels.assign(np.full(N, 7, "int32"))
    restored.load_own_variables(store)
    for name in ("memory", "labels"):
        np.testing.assert_array_equal(to_numpy(getattr(restored, name)), to_numpy(getattr(part, name)))
    np.testing.assert_array_equal(to_numpy(restored.draw_negatives(B, True)), to_numpy(part.draw_negatives(B, True)))


def test_mcl_config_round_trip_and_bad_arguments():
    part = knowledge.MutualContrastive(100, alpha=0.2, lam=0.5, kd_temperature=4.0, num_negatives=64)
    again = knowledge.MutualContrastive.from_config(part.get_config())
    assert (again.alpha, again.beta, again.gamma, again.lam, again.kd_temperature, again.num_negatives,
            again.temperature) == (0.2, 0.1, 1.0, 0.5, 4.0, 64, 0.1)
    with pytest.raises(ValueError, match="gamma must be >= 0, got -1"):
        knowledge.MutualContrastive(100, gamma=-1)
    with pytest.raises(ValueError, match="kd_temperature must be > 0"):
        knowledge.MutualContrastive(100, kd_temperature=0.0)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        knowledge.MutualContrastive(0)


def test_mcl_preset_defaults_and_refusals():
    with keras.StatelessScope(initialize_variables=False):
        pair = [keras_okd.models.get("resnet20", num_classes=100) for _ in range(2)]
        part = keras_okd.methods.mcl(pair, num_train_samples=50_000).knowledge[0]
    assert (part.alpha, part.beta, part.gamma, part.lam, part.temperature, part.kd_temperature) == (
        0.1, 0.1, 1.0, 1.0, 0.1, 3.0)
    assert (part.embedding_dim, part.num_negatives, part.momentum, part.reduction) == (128, 8192, 0.5, "sum")
    assert part.layers_for_peer(0) == ("pool",) and part.needs_index
    with pytest.raises(ValueError, match="independent students"):
        keras_okd.methods.mcl(keras_okd.models.multi_branch("simple_cnn", 2, num_classes=10, input_shape=(8, 8, 1),
                                                            width=4), num_train_samples=10)


@pytest.mark.heavy
def test_mcl_trains_end_to_end_and_exports_plain_students():
    (x, y), _ = keras_okd.data.digits_arrays()
    x, y = x[:96], y[:96]
    pair = [tiny_student(name=f"s{i}") for i in range(2)]
    flat = [[next(layer.name for layer in s.layers if isinstance(layer, keras.layers.Flatten))] for s in pair]
    d = keras_okd.methods.mcl(pair, num_train_samples=128, layers=flat, num_negatives=16, embedding_dim=8, seed=3)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    part = d.knowledge[0]
    before = to_numpy(part.memory).copy()
    history = d.fit({"inputs": x, "index": np.arange(96)}, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
    assert all(np.isfinite(history.history[f"student_{i}_mcl"][-1]) for i in range(2))
    changed = np.nonzero(np.any(to_numpy(part.memory) != before, axis=(1, 2)))[0]
    np.testing.assert_array_equal(changed, np.arange(96))
    np.testing.assert_array_equal(to_numpy(part.labels), np.concatenate([y, np.full(32, -1)]))
    assert d.students[0].count_params() == tiny_student().count_params()


@pytest.mark.heavy
def test_backup_and_restore_resumes_memory_labels_and_keys(tmp_path):
    """An interrupted fit resumed with BackupAndRestore ends where an uninterrupted one does: the memory, its row
    labels, the keys' generator, the heads and the students."""
    (x, y), _ = keras_okd.data.digits_arrays()
    x, y = x[:96], y[:96]

    def run(callbacks):
        keras.utils.set_random_seed(5)
        pair = [tiny_student(name=f"s{i}") for i in range(2)]
        flat = [[next(layer.name for layer in s.layers if isinstance(layer, keras.layers.Flatten))] for s in pair]
        d = keras_okd.methods.mcl(pair, num_train_samples=128, layers=flat, num_negatives=16, embedding_dim=8, seed=3)
        d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        d.fit({"inputs": x, "index": np.arange(96)}, y, epochs=2, batch_size=48, verbose=0, shuffle=False,
              callbacks=callbacks)
        return d

    straight, resumed = straight_and_resumed(run, tmp_path / "backup", epoch=1, batch=0)
    a, b = straight.knowledge[0], resumed.knowledge[0]
    np.testing.assert_array_equal(to_numpy(b.labels), to_numpy(a.labels))
    np.testing.assert_array_equal(to_numpy(b.seed_generator.state), to_numpy(a.seed_generator.state))
    for u, v in zip(straight.variables, resumed.variables):
        np.testing.assert_allclose(to_numpy(v), to_numpy(u), rtol=1e-4, atol=1e-5, err_msg=u.path)
