"""The feature-distillation parts against independent numpy computations of their papers' formulas.

For every part, three peers with different feature shapes (where the method allows them): each peer's loss equals
the mean over the other peers of the numpy pair loss (float64), and the gradient of peer 0's loss with respect to
peer 0's features equals the numpy loss's numerical gradient (central differences in float64); the gradient with
respect to another peer's features is exactly zero (targets are detached).
"""

import keras
import numpy as np
import pytest
from conftest import BACKEND, gradient, to_numpy
from keras import ops

from keras_okd import knowledge

B = 5
M = 3


# ---------------------------------------------------------------------------------------------------------------------
# numpy references (float64), written from the papers' equations


def np_normalize(x, axis=-1, eps=1e-12):
    return x / np.maximum(np.sqrt((x**2).sum(axis=axis, keepdims=True)), eps)


def np_pool(x, size):
    h, w = size
    H, W = x.shape[1:3]
    return x.reshape((x.shape[0], h, H // h, w, W // w) + x.shape[3:]).mean(axis=(2, 4))


def np_common(a, b):
    return min(a.shape[1], b.shape[1]), min(a.shape[2], b.shape[2])


def np_conv_valid(x, kernel):  # cross-correlation, kernel (kh, kw, C, O)
    kh, kw = kernel.shape[:2]
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return sum(
        np.einsum("bhwc,co->bhwo", x[:, dy : dy + ho, dx : dx + wo], kernel[dy, dx])
        for dy in range(kh)
        for dx in range(kw)
    )


def np_conv_transpose_valid(x, kernel):  # the adjoint of np_conv_valid; kernel (kh, kw, O, C)
    kh, kw = kernel.shape[:2]
    h, w = x.shape[1:3]
    out = np.zeros((x.shape[0], h + kh - 1, w + kw - 1, kernel.shape[2]))
    for dy in range(kh):
        for dx in range(kw):
            out[:, dy : dy + h, dx : dx + w] += np.einsum("bhwc,oc->bhwo", x, kernel[dy, dx])
    return out


def np_regressor(part, i, j, k, x):
    r = next(c for c in part.connectors if c.name == f"{part.name}_regressor_{i}_{j}_{k}")
    y = x
    for layer in r.layers:
        weights = [to_numpy(w).astype("float64") for w in layer.trainable_weights]
        if isinstance(layer, keras.layers.Conv2DTranspose):
            y = np_conv_transpose_valid(y, weights[0])
        elif isinstance(layer, keras.layers.Conv2D):
            y = np_conv_valid(y, weights[0])
        elif isinstance(layer, keras.layers.Dense):
            y = y @ weights[0]
        elif isinstance(layer, keras.layers.BatchNormalization):  # training mode: batch statistics
            gamma, beta = weights[0], weights[1]
            axes = tuple(range(y.ndim - 1))
            y = gamma * (y - y.mean(axes)) / np.sqrt(y.var(axes) + 1e-5) + beta
        else:
            assert isinstance(layer, keras.layers.Activation)
            y = np.maximum(y, 0.0)
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and len(weights) == 2:
            y = y + weights[1]
    return y


def np_fitnet(part, own, target, i, j):  # FitNets Eq. (3), mean-normalised: mean over elements, then batch
    return sum(((np_regressor(part, i, j, k, a) - t) ** 2).reshape(B, -1).mean(1).mean()
               for k, (a, t) in enumerate(zip(own, target)))


def np_at(part, own, target, i, j):  # AT: Q = vec(mean_c A^2), L2-normalised; mean over positions of (Q_s - Q_t)^2
    total = 0.0
    for a, t in zip(own, target):
        qa, qt = (a**2).mean(-1), (t**2).mean(-1)
        size = np_common(qa, qt)
        qa, qt = np_normalize(np_pool(qa, size).reshape(B, -1)), np_normalize(np_pool(qt, size).reshape(B, -1))
        total += ((qa - qt) ** 2).mean(1).mean()
    return total


def np_nst(part, own, target, i, j):  # NST Eq. (4), polynomial kernel d = 2, c = 0, per sample, batch mean
    total = 0.0
    for a, t in zip(own, target):
        size = np_common(a, t)
        fs = np_normalize(np_pool(a, size).reshape(B, -1, a.shape[-1]), axis=1)  # (B, HW, C_S)
        ft = np_normalize(np_pool(t, size).reshape(B, -1, t.shape[-1]), axis=1)
        def k(x, y):  # mean over all channel pairs of (x_c . y_c')^2
            return (np.einsum("bpc,bpd->bcd", x, y) ** 2).mean(axis=(1, 2))

        total += (k(ft, ft) + k(fs, fs) - 2 * k(fs, ft)).mean()
    return total


def np_sp(part, own, target, i, j):  # SP Eq. (2)-(3)
    total = 0.0
    for a, t in zip(own, target):
        ga, gt = a.reshape(B, -1) @ a.reshape(B, -1).T, t.reshape(B, -1) @ t.reshape(B, -1).T
        ga, gt = ga / np.linalg.norm(ga, axis=1, keepdims=True), gt / np.linalg.norm(gt, axis=1, keepdims=True)
        total += ((gt - ga) ** 2).sum() / B**2
    return total


def np_rkd_potentials(x):
    x = x.reshape(B, -1)
    d = np.array([[np.linalg.norm(x[p] - x[q]) for q in range(B)] for p in range(B)])
    d = d / d[d > 0].mean()
    angle = np.zeros((B, B, B))
    for jj in range(B):
        for ii in range(B):
            for kk in range(B):
                e1, e2 = x[ii] - x[jj], x[kk] - x[jj]
                n1, n2 = np.linalg.norm(e1), np.linalg.norm(e2)
                angle[jj, ii, kk] = 0.0 if n1 == 0 or n2 == 0 else (e1 / n1) @ (e2 / n2)
    return d, angle


def np_huber(a, b):
    d = np.abs(a - b)
    return np.where(d < 1, 0.5 * d**2, d - 0.5).mean()


def np_rkd(part, own, target, i, j):  # RKD Eqs. (4)-(8), weights 25 / 50
    total = 0.0
    for a, t in zip(own, target):
        (da, aa), (dt, at) = np_rkd_potentials(a), np_rkd_potentials(t)
        total += part.distance_weight * np_huber(da, dt) + part.angle_weight * np_huber(aa, at)
    return total


def np_pkt_probabilities(x, eps=1e-7):
    x = x.reshape(B, -1)
    x = x / (np.linalg.norm(x, axis=1, keepdims=True) + eps)
    kernel = (x @ x.T + 1) / 2
    np.fill_diagonal(kernel, 0.0)
    return kernel / kernel.sum(1, keepdims=True)


def np_pkt(part, own, target, i, j):  # PKT Eqs. (6)-(9), mean over the b(b - 1) pairs
    total = 0.0
    for a, t in zip(own, target):
        ps, pt = np_pkt_probabilities(a), np_pkt_probabilities(t)
        terms = pt * np.log((pt + 1e-7) / (ps + 1e-7))
        np.fill_diagonal(terms, 0.0)
        total += terms.sum() / (B * (B - 1))
    return total


def np_crd_embed(part, i, x):
    w, b = (to_numpy(v).astype("float64") for v in part.connectors[i].weights)
    return np_normalize(x.reshape(B, -1) @ w + b)


def np_crd_pair(part, anchor, memory, index, negatives, j):
    """CRD Eq. (18) with the critic of Eq. (10), Z = M exp(1 / (2 d tau^2)), anchor against peer j's memory."""
    tau, n, k = part.temperature, part.num_samples, part.num_negatives
    z = n * np.exp(1.0 / (2 * part.embedding_dim * tau**2))
    keys = np.concatenate([memory[index, j][:, None], memory[negatives, j]], axis=1)  # (B, K + 1, d)
    p = np.exp(np.einsum("bd,bkd->bk", anchor, keys) / tau) / z
    noise = k / n
    per = -(np.log(p[:, 0] / (p[:, 0] + noise + 1e-7)) + np.log(noise / (p[:, 1:] + noise + 1e-7)).sum(1))
    return per.mean()


# ---------------------------------------------------------------------------------------------------------------------
# cases: a part and the peers' feature shapes (heterogeneous where the method allows)

IMAGE_TWO = [  # two layers per peer: different channels, and sizes that pool onto each other
    {"a": (4, 4, 3), "b": (2, 2, 6)},
    {"a": (4, 4, 5), "b": (2, 2, 2)},
    {"a": (2, 2, 4), "b": (4, 4, 3)},
]
CASES = {
    "fitnet": (lambda: knowledge.FitNet(layers=("a",)), [{"a": (4, 4, 3)}, {"a": (4, 4, 5)}, {"a": (2, 2, 4)}],
               np_fitnet),
    "fitnet_dense": (lambda: knowledge.FitNet(layers=("p",), batch_norm=False, activation=None),
                     [{"p": (6,)}, {"p": (4,)}, {"p": (3,)}], np_fitnet),
    "at": (lambda: knowledge.AttentionTransfer(layers=("a", "b")), IMAGE_TWO, np_at),
    "nst": (lambda: knowledge.NeuronSelectivityTransfer(layers=("a", "b")), IMAGE_TWO, np_nst),
    "sp": (lambda: knowledge.SimilarityPreserving(layers=("a",)), [{"a": (4, 4, 3)}, {"a": (2, 2, 4)}, {"a": (7,)}],
           np_sp),
    "rkd": (lambda: knowledge.RelationalKD(layers=("p",)), [{"p": (6,)}, {"p": (4,)}, {"p": (2, 2, 3)}], np_rkd),
    "rkd_distance_only": (lambda: knowledge.RelationalKD(layers=("p",), angle_weight=0.0),
                          [{"p": (6,)}, {"p": (4,)}, {"p": (3,)}], np_rkd),
    "pkt": (lambda: knowledge.ProbabilisticKT(layers=("p",)), [{"p": (6,)}, {"p": (4,)}, {"p": (2, 2, 3)}], np_pkt),
}


def build(make, shapes, num_peers=M):
    """The part `make()` built for peers with feature `shapes`.

    Under JAX the variables are created shapes-only and filled from numpy (He-normal kernels, unit gamma, zero
    bias/beta, the CRD memory's U(-a, a)): JAX on CPU compiles each random initializer once per weight shape, about
    17 s for FitNet's six regressors here. The initializers themselves run on the other backends.
    """
    part = make()
    feature_shapes = {"peer_features": [{n: (None, *s) for n, s in peer.items()} for peer in shapes]}
    if BACKEND != "jax":
        part.build_for_peers(num_peers, 10, feature_shapes)
        return part
    from keras.src.backend.common import global_state

    before = list(global_state.get_global_attribute("uninitialized_variables", None) or [])
    existing = {id(v) for v in part.variables}
    try:
        with keras.StatelessScope(initialize_variables=False):
            part.build_for_peers(num_peers, 10, feature_shapes)
    finally:
        global_state.set_global_attribute("uninitialized_variables", before)
    rng = np.random.default_rng(0)
    for v in part.variables:
        if id(v) in existing:
            continue
        shape, name = tuple(v.shape), v.path.split("/")[-1]
        if name == "memory":
            bound = 1 / np.sqrt(shape[-1] / 3)
            value = rng.uniform(-bound, bound, size=shape)
        elif name == "kernel":
            value = rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
        elif name in ("gamma", "moving_variance"):
            value = np.ones(shape)
        else:
            value = np.zeros(shape)
        v.assign(value.astype(v.dtype))
    return part


def random_features(shapes, seed):
    rng = np.random.default_rng(seed)
    return [{n: rng.normal(size=(B, *s)).astype("float32") for n, s in peer.items()} for peer in shapes]


def context(features, training=True, index=None, sample_weight=None):
    return {"peer_features": features, "labels": np.zeros(B, "int32"), "index": index, "training": training,
            "sample_weight": sample_weight}


def peer_losses(part, features, **kwargs):
    """The part's `(M,)` peer losses. A stateless scope drops the batch-norm statistics a FitNet regressor updates in
    training (on JAX, an update inside a gradient transformation would leak a tracer into the variable)."""
    with keras.StatelessScope():
        return part.targets(np.zeros((B, len(features), 10), "float32"), context(features, **kwargs))["peer_losses"]


def compiled(fn):
    """`fn` compiled once on JAX: run op by op, JAX compiles every new operation shape (tens of seconds per part on
    two cores); one `jax.jit` computes the same values in about a second. Identity on the other backends."""
    if BACKEND != "jax":
        return fn
    import jax

    return jax.jit(fn)


def numerical_gradient(fn, x, h=1e-5):
    x = x.astype("float64")
    g = np.zeros_like(x)
    for position in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[position] = h
        g[position] = (fn(x + step) - fn(x - step)) / (2 * h)
    return g


def differences(got, want):
    """(max abs difference, max relative difference where |want| > 1e-3 * max |want|)."""
    got, want = np.asarray(got, "float64"), np.asarray(want, "float64")
    diff = np.abs(got - want)
    big = np.abs(want) > 1e-3 * np.abs(want).max()
    return diff.max(), (diff[big] / np.abs(want[big])).max()


def as64(features):
    return [{n: v.astype("float64") for n, v in peer.items()} for peer in features]


def np_peer_losses(part, np_pair, features, peers=range(M)):
    names = [part.layers_for_peer(i) for i in range(M)]
    feats = [[features[i][n] for n in names[i]] for i in range(M)]
    return [np.mean([np_pair(part, feats[i], feats[j], i, j) for j in range(M) if j != i]) for i in peers]


@pytest.mark.parametrize("case", sorted(CASES))
def test_value_and_gradient_match_numpy(case):
    make, shapes, np_pair = CASES[case]
    part = build(make, shapes)
    features = random_features(shapes, seed=sorted(CASES).index(case))
    got = to_numpy(compiled(lambda feats: peer_losses(part, feats))(features))
    want = np_peer_losses(part, np_pair, as64(features))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    value_diff = differences(got, want)

    # d(peer 0's loss) / d(peer 0's features), all layers it reads at once (packed into one vector), against the
    # numpy loss's numerical gradient; and d(peer 0's loss) / d(peer 1's features), which must be exactly zero.
    def packed(peer):
        names = part.layers_for_peer(peer)
        flat = np.concatenate([features[peer][n].reshape(-1) for n in names])

        def unpack(x, reshape):
            out, start = {}, 0
            for n in names:
                size = features[peer][n].size
                out[n] = reshape(x[start : start + size], features[peer][n].shape)
                start += size
            return out

        return flat, unpack

    flat, unpack = packed(0)

    def backend_loss(x):
        given = [dict(peer) for peer in features]
        given[0].update(unpack(x, ops.reshape))
        return peer_losses(part, given)[0]

    def numpy_loss(x):
        given = as64(features)
        given[0].update(unpack(x, np.reshape))
        return np_peer_losses(part, np_pair, given, peers=[0])[0]

    g = gradient(compiled(backend_loss), flat)
    g_want = numerical_gradient(numpy_loss, flat)
    np.testing.assert_allclose(g, g_want, rtol=1e-4, atol=1e-5 * np.abs(g_want).max())
    grad_diff = differences(g, g_want)
    for n in part.layers_for_peer(0):  # every layer receives gradient
        assert np.abs(unpack(g, np.reshape)[n]).max() > 0

    flat1, unpack1 = packed(1)

    def other_loss(x):
        given = [dict(peer) for peer in features]
        given[1].update(unpack1(x, ops.reshape))
        return peer_losses(part, given)[0]

    assert np.all(gradient(compiled(other_loss), flat1) == 0.0)  # detached targets
    print(f"\n{BACKEND} {case}: value max abs {value_diff[0]:.2e} rel {value_diff[1]:.2e}; gradient max abs "
          f"{grad_diff[0]:.2e} rel {grad_diff[1]:.2e}")


def test_sum_reduction_and_per_peer_layer_names():
    """reduction="sum" sums over the other peers; per-peer layer names and `{peer}` pick each peer's own layer."""
    shapes = [{"x0": (4, 4, 3)}, {"x1": (4, 4, 5)}, {"x2": (4, 4, 2)}]
    features = random_features(shapes, seed=11)
    summed = build(lambda: knowledge.AttentionTransfer(layers="x{peer}", reduction="sum"), shapes)
    per_peer = build(lambda: knowledge.AttentionTransfer(layers=[["x0"], ["x1"], ["x2"]]), shapes)
    feats = [[features[i][f"x{i}"].astype("float64")] for i in range(M)]
    pairs = [[np_at(None, feats[i], feats[j], i, j) for j in range(M)] for i in range(M)]
    np.testing.assert_allclose(to_numpy(peer_losses(summed, features)),
                               [sum(pairs[i][j] for j in range(M) if j != i) for i in range(M)], rtol=1e-5)
    np.testing.assert_allclose(to_numpy(peer_losses(per_peer, features)),
                               [np.mean([pairs[i][j] for j in range(M) if j != i]) for i in range(M)], rtol=1e-5)


def test_sample_weight_weighs_per_sample_losses_and_is_refused_by_relational_ones():
    shapes = [{"a": (4, 4, 3)}, {"a": (4, 4, 5)}]
    features = random_features(shapes, seed=3)
    weights = np.array([0.0, 1.0, 2.0, 0.5, 1.5], "float32")
    part = build(lambda: knowledge.AttentionTransfer(layers="a"), shapes, num_peers=2)
    qa = np_normalize((features[0]["a"].astype("float64") ** 2).mean(-1).reshape(B, -1))
    qt = np_normalize((features[1]["a"].astype("float64") ** 2).mean(-1).reshape(B, -1))
    per_sample = ((qa - qt) ** 2).mean(1)
    np.testing.assert_allclose(to_numpy(peer_losses(part, features, sample_weight=weights))[0],
                               np.mean(weights * per_sample), rtol=1e-5)
    for make in (knowledge.SimilarityPreserving, knowledge.RelationalKD, knowledge.ProbabilisticKT):
        relational = build(lambda make=make: make(layers="a"), shapes, num_peers=2)
        with pytest.raises(ValueError, match="per-sample weights"):
            peer_losses(relational, features, sample_weight=weights)


def test_one_sample_batch_is_finite():
    """A final batch of one sample (N % batch == 1) must not produce NaN in the relational losses."""
    shapes = [{"p": (4,)}, {"p": (3,)}]
    for make in (knowledge.SimilarityPreserving, knowledge.RelationalKD, knowledge.ProbabilisticKT):
        part = build(lambda make=make: make(layers="p"), shapes, num_peers=2)
        rng = np.random.default_rng(0)
        features = [{"p": rng.normal(size=(1, 4)).astype("float32")}, {"p": rng.normal(size=(1, 3)).astype("float32")}]
        got = compiled(lambda f, part=part: part.targets(np.zeros((1, 2, 10), "float32"), context(f))["peer_losses"])
        np.testing.assert_allclose(to_numpy(got(features)), [0.0, 0.0], atol=1e-6)  # finite, no 0 / 0


# ---------------------------------------------------------------------------------------------------------------------
# shapes: accepted or refused at build time, with the message naming the problem


@pytest.mark.parametrize(
    "make,shapes,match",
    [
        (lambda: knowledge.AttentionTransfer(layers="a"), [{"a": (4, 4, 3)}, {"a": (3, 3, 3)}], "integer multiple"),
        (lambda: knowledge.NeuronSelectivityTransfer(layers="a"), [{"a": (6, 6, 3)}, {"a": (4, 4, 3)}],
         "integer multiple"),
        (lambda: knowledge.AttentionTransfer(layers="a"), [{"a": (4,)}, {"a": (4, 4, 3)}], "image"),
        (lambda: knowledge.NeuronSelectivityTransfer(layers="a"), [{"a": (4,)}, {"a": (5,)}], "image"),
        (lambda: knowledge.FitNet(layers="a"), [{"a": (4, 2, 3)}, {"a": (2, 4, 3)}], "taller but narrower"),
        (lambda: knowledge.FitNet(layers="a"), [{"a": (8,)}, {"a": (2, 2, 3)}], "pair image layers with image"),
        (lambda: knowledge.AttentionTransfer(layers="missing"), [{"a": (4, 4, 3)}, {"a": (4, 4, 3)}],
         r"no feature layer named \['missing'\]; it offers \['a'\]"),
        (lambda: knowledge.AttentionTransfer(layers=[["a"], ["a", "b"]]), [{"a": (4, 4, 3)}, {"a": (4, 4, 3), "b": (4, 4, 3)}],
         "different numbers of layers"),
        (lambda: knowledge.AttentionTransfer(layers=[["a"], ["a"], ["a"]]), [{"a": (4, 4, 3)}, {"a": (4, 4, 3)}],
         "3 per-peer sequences for 2 peers"),
    ],
)
def test_incompatible_shapes_are_refused_at_build(make, shapes, match):
    with pytest.raises(ValueError, match=match):
        build(make, shapes, num_peers=len(shapes))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="mixes names and per-peer sequences"):
        knowledge.AttentionTransfer(layers=["a", ["b"]])
    with pytest.raises(ValueError, match="layers is empty"):
        knowledge.SimilarityPreserving(layers=[])
    with pytest.raises(ValueError, match="reduction"):
        knowledge.ProbabilisticKT(reduction="max")
    with pytest.raises(ValueError, match="1 layer"):
        knowledge.ContrastiveRepresentation(10, layers=("a", "b"))
    with pytest.raises(ValueError, match="not both 0"):
        knowledge.RelationalKD(distance_weight=0, angle_weight=0)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        knowledge.ContrastiveRepresentation(0)
    with pytest.raises(ValueError, match="no feature shapes were given"):
        knowledge.AttentionTransfer().build_for_peers(2, 10)


def test_fitnet_regressors_follow_the_paper_and_belong_to_the_part():
    """One regressor per ordered pair: 1x1 for equal sizes, the paper's valid convolution when shrinking, its
    transpose when growing; trainable weights of the part (never of a student)."""
    part = build(CASES["fitnet"][0], CASES["fitnet"][1])
    kernels = {c.name: tuple(c.layers[0].kernel.shape) for c in part.connectors}
    assert kernels == {
        "fitnet_regressor_0_1_0": (1, 1, 3, 5),
        "fitnet_regressor_0_2_0": (3, 3, 3, 4),  # 4x4 -> 2x2: kernel 1 + 4 - 2
        "fitnet_regressor_1_0_0": (1, 1, 5, 3),
        "fitnet_regressor_1_2_0": (3, 3, 5, 4),
        "fitnet_regressor_2_0_0": (3, 3, 3, 4),  # 2x2 -> 4x4: transposed, kernel (kh, kw, out, in)
        "fitnet_regressor_2_1_0": (3, 3, 5, 4),
    }
    assert isinstance(part.connectors[4].layers[0], keras.layers.Conv2DTranspose)
    assert len(part.trainable_weights) == 6 * 3  # kernel + BN gamma, beta per regressor
    # Rebuilding for the same shapes keeps the regressors; other shapes are refused.
    part.build_heads({"peer_features": [{"a": (None, *s["a"])} for s in CASES["fitnet"][1]]})
    assert len(part.trainable_weights) == 18
    with pytest.raises(ValueError, match="was built for feature shapes"):
        part.build_heads({"peer_features": [{"a": (None, 4, 4, 3)}] * 3})


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_round_trip(case):
    part = CASES[case][0]()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(part))
    assert type(restored) is type(part)
    assert restored.get_config() == part.get_config()


# ---------------------------------------------------------------------------------------------------------------------
# CRD: memory, negatives, state

N, K, D = 12, 4, 8
CRD_SHAPES = [{"p": (6,)}, {"p": (4,)}, {"p": (2, 2, 3)}]


def crd(**kwargs):
    options = dict(num_samples=N, layers="p", num_negatives=K, embedding_dim=D, seed=5)
    options.update(kwargs)
    return build(lambda: knowledge.ContrastiveRepresentation(**options), CRD_SHAPES)


def fix_negatives(part, negatives):
    part.draw_negatives = lambda batch_size, training: ops.convert_to_tensor(negatives, dtype="int32")


def test_crd_value_and_gradient_match_numpy():
    part = crd()
    features = random_features(CRD_SHAPES, seed=21)
    index = np.array([3, 0, 7, 11, 5], "int32")
    negatives = np.random.default_rng(2).integers(0, N, size=(B, K)).astype("int32")
    fix_negatives(part, negatives)
    memory = to_numpy(part.memory).astype("float64")

    def numpy_losses(feats):
        anchors = [np_crd_embed(part, i, feats[i]["p"]) for i in range(M)]
        return [np.mean([np_crd_pair(part, anchors[i], memory, index, negatives, j) for j in range(M) if j != i])
                for i in range(M)]

    got = to_numpy(compiled(lambda feats: peer_losses(part, feats, index=index))(features))
    want = numpy_losses(as64(features))
    np.testing.assert_allclose(got, want, rtol=1e-5)

    def backend_loss(x):
        return peer_losses(part, [{"p": x}] + features[1:], index=index)[0]

    def numpy_loss(x):
        return numpy_losses([{"p": x}] + as64(features)[1:])[0]

    g = gradient(compiled(backend_loss), features[0]["p"])
    g_want = numerical_gradient(numpy_loss, features[0]["p"])
    np.testing.assert_allclose(g, g_want, rtol=1e-4, atol=1e-5 * np.abs(g_want).max())
    other = gradient(compiled(lambda x: peer_losses(part, [features[0], {"p": x}, features[2]], index=index)[0]),
                     features[1]["p"])
    assert np.all(other == 0.0)
    vd, gd = differences(got, want), differences(g, g_want)
    print(f"\n{BACKEND} crd: value max abs {vd[0]:.2e} rel {vd[1]:.2e}; gradient max abs {gd[0]:.2e} rel {gd[1]:.2e}")


def test_crd_evaluation_shares_one_set_of_negatives():
    part = crd()
    features = random_features(CRD_SHAPES, seed=25)
    index = np.array([3, 0, 7, 11, 5], "int32")
    negatives = np.random.default_rng(4).integers(0, N, size=(1, K)).astype("int32")
    fix_negatives(part, negatives)
    memory = to_numpy(part.memory).astype("float64")
    anchors = [np_crd_embed(part, i, features[i]["p"].astype("float64")) for i in range(M)]
    want = [np.mean([np_crd_pair(part, anchors[i], memory, index, np.repeat(negatives, B, 0), j)
                     for j in range(M) if j != i]) for i in range(M)]
    got = to_numpy(peer_losses(part, features, index=index, training=False))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_crd_step_writes_only_its_rows_and_nothing_when_not_finite_or_not_training():
    part = crd()
    features = random_features(CRD_SHAPES, seed=22)
    index = np.array([9, 2, 4, 10, 6], "int32")
    before = to_numpy(part.memory)
    seed_state = to_numpy(part.seed_generator.state)

    out = part.targets(np.zeros((B, M, 10), "float32"), context(features, training=False, index=index))
    assert "state" not in out  # evaluation writes nothing ...
    np.testing.assert_array_equal(to_numpy(part.seed_generator.state), seed_state)  # ... and draws from a fixed seed

    out = part.targets(np.zeros((B, M, 10), "float32"), context(features, index=index))
    assert not np.array_equal(to_numpy(part.seed_generator.state), seed_state)  # training draws new negatives
    part.commit(out["state"], np.array(False))
    np.testing.assert_array_equal(to_numpy(part.memory), before)  # a non-finite step writes nothing

    part.commit(out["state"], np.array(True))
    after = to_numpy(part.memory)
    changed = np.unique(np.nonzero(np.any(after != before, axis=(1, 2)))[0])
    np.testing.assert_array_equal(changed, np.sort(index))  # only the batch's rows
    anchors = np.stack([np_crd_embed(part, i, features[i]["p"].astype("float64")) for i in range(M)], axis=1)
    expected = np_normalize(0.5 * before[index].astype("float64") + 0.5 * anchors)
    np.testing.assert_allclose(after[index], expected, rtol=1e-5, atol=1e-6)


def test_crd_negatives_are_uniform_indices_and_read_per_batch():
    part = crd(num_negatives=64)
    drawn = to_numpy(part.draw_negatives(B, True))
    assert drawn.shape == (B, 64) and drawn.min() >= 0 and drawn.max() < N
    assert len(np.unique(drawn)) == N  # 320 uniform draws over 12 rows reach every row
    shared = to_numpy(part.draw_negatives(B, False))  # outside training: one set for the batch, from a fixed seed
    assert shared.shape == (1, 64)
    np.testing.assert_array_equal(shared, to_numpy(part.draw_negatives(B, False)))
    rows = to_numpy(part.read(ops.convert_to_tensor(np.array([[1, 2], [3, 1]], "int32"))))
    np.testing.assert_array_equal(rows, to_numpy(part.memory)[np.array([[1, 2], [3, 1]])])


def test_crd_normalizer_is_the_code_estimate_in_closed_form():
    """Z = M * mean(exp(v.u / tau)) over the uniformly initialised memory (the authors' first-batch estimate)
    equals M * exp(1 / (2 d tau^2)) up to Monte Carlo noise."""
    d, tau, n = 128, 0.07, 50_000
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(d / 3)
    memory = rng.uniform(-bound, bound, size=(20_000, d))
    anchors = np_normalize(rng.normal(size=(64, d)))
    estimate = n * np.exp(anchors @ memory.T / tau).mean()
    closed = knowledge.ContrastiveRepresentation(n, embedding_dim=d, temperature=tau).z
    assert abs(estimate / closed - 1) < 0.02
    assert knowledge.ContrastiveRepresentation(n, normalize=False).z == 1.0


def test_crd_memory_and_negative_stream_survive_save_and_load(tmp_path):
    part = crd()
    features = random_features(CRD_SHAPES, seed=23)
    out = part.targets(np.zeros((B, M, 10), "float32"), context(features, index=np.arange(B)))
    part.commit(out["state"], np.array(True))

    class Holder(keras.Model):
        def __init__(self, part, **kwargs):
            super().__init__(**kwargs)
            self.part = part

        def call(self, x):
            return x

    saved = Holder(part)
    saved.built = True
    saved.save_weights(tmp_path / "crd.weights.h5")
    restored = Holder(crd(seed=99))
    restored.built = True
    restored.load_weights(tmp_path / "crd.weights.h5")
    np.testing.assert_array_equal(to_numpy(restored.part.memory), to_numpy(part.memory))
    for a, b in zip(restored.part.connectors, part.connectors):
        np.testing.assert_array_equal(to_numpy(a.kernel), to_numpy(b.kernel))
    np.testing.assert_array_equal(to_numpy(restored.part.draw_negatives(B, True)), to_numpy(part.draw_negatives(B, True)))


def test_crd_reduced_precision_memory():
    part = crd(memory_dtype="float16")
    features = random_features(CRD_SHAPES, seed=24)
    index = np.array([1, 3, 5, 7, 9], "int32")
    out = part.targets(np.zeros((B, M, 10), "float32"), context(features, index=index))
    part.commit(out["state"], np.array(True))
    rows = to_numpy(part.read(ops.convert_to_tensor(index)))
    np.testing.assert_allclose(rows, to_numpy(out["state"]["new"]), rtol=1e-3, atol=1e-3)
    assert part.memory_bytes() == N * M * D * 2


def test_fitnet_puts_its_regressors_statistics_back_after_a_non_finite_step():
    shapes = [{"a": (4, 4, 3)}, {"a": (4, 4, 5)}]
    part = build(lambda: knowledge.FitNet(layers="a"), shapes, num_peers=2)
    moving = [v for r in part.connectors for v in r.non_trainable_variables]
    assert len(moving) == 4  # moving mean and variance of each regressor's batch norm
    before = [to_numpy(v).copy() for v in moving]
    out = part.targets(np.zeros((B, 2, 10), "float32"), context(random_features(shapes, seed=8)))
    moved = [to_numpy(v).copy() for v in moving]
    assert all(not np.array_equal(a, b) for a, b in zip(before, moved))  # training moved them
    part.commit(out["state"], np.array(False))
    for v, old in zip(moving, before):
        np.testing.assert_array_equal(to_numpy(v), old)
    out = part.targets(np.zeros((B, 2, 10), "float32"), context(random_features(shapes, seed=8)))
    part.commit(out["state"], np.array(True))
    for v, new in zip(moving, moved):
        np.testing.assert_allclose(to_numpy(v), new, rtol=1e-6)
    assert "state" not in part.targets(np.zeros((B, 2, 10), "float32"),
                                       context(random_features(shapes, seed=8), training=False))


def test_rkd_angle_loss_equals_the_mean_huber_of_the_angle_potentials():
    """`angle_loss` (one vertex at a time) is Eq. 8 over the full b^3 potentials of Eq. 7 (`angle_potentials`)."""
    from keras_okd.knowledge.features import rkd

    rng = np.random.default_rng(9)
    own, target = rng.normal(size=(B, 6)).astype("float32"), rng.normal(size=(B, 2, 2)).astype("float32")
    potentials = to_numpy(rkd.angle_potentials(own))
    np.testing.assert_allclose(potentials, np_rkd_potentials(own.astype("float64"))[1], rtol=1e-5, atol=1e-6)
    want = np_huber(potentials, np_rkd_potentials(target.astype("float64"))[1])
    np.testing.assert_allclose(to_numpy(rkd.angle_loss(own, target)), want, rtol=1e-5)
