"""CL (Song and Chai, NeurIPS 2018): the consensus part against numpy (value and gradient), backpropagation
rescaling against an unscaled copy, the preset, and a short training on digits."""

import keras
import numpy as np
import pytest
from conftest import gradient, to_numpy
from test_losses import np_kl, np_softmax

import keras_okd
from keras_okd import knowledge, losses
from keras_okd.models import GradientScale, multi_branch, scale_trunk_gradients, trunk_gradient_scale

RNG = np.random.default_rng(5)
B, M, C = 6, 3, 5


def branches(m=M, **kwargs):
    return multi_branch("simple_cnn", m, num_classes=10, input_shape=(8, 8, 1), width=2, **kwargs)


def part_kd(part, logits, labels=None):
    ctx = {"index": None, "labels": labels if labels is not None else np.zeros(B, "int32"),
           "training": True, "sample_weight": None}
    out = part.targets(keras.ops.convert_to_tensor(logits), ctx)
    return losses.pairwise_kd(out["targets"], logits, part.temperature, out["pair_weights"])


def np_consensus(z, tau, average):
    m = z.shape[1]
    targets = []
    for p in range(m):
        others = [j for j in range(m) if j != p]
        if average == "logits":
            targets.append(np_softmax(z[:, others].mean(1), tau))
        else:
            targets.append(np_softmax(z[:, others], tau).mean(1))
    return np.stack(targets, 1)


@pytest.mark.parametrize("average", ["logits", "probabilities"])
def test_consensus_value_and_gradient_match_numpy(average):
    z = (RNG.normal(size=(B, M, C)) * 2).astype("float32")
    tau = 2.0
    part = knowledge.PeerConsensus(temperature=tau, average=average)
    part.build_for_peers(M, C)
    q = np_consensus(z.astype("float64"), tau, average)
    p = np_softmax(z.astype("float64"), tau)
    want = [tau**2 * np.mean(np_kl(q[:, i], p[:, i])) for i in range(M)]
    np.testing.assert_allclose(to_numpy(part_kd(part, z)), want, rtol=1e-5)
    # d sum_i L_i / d z: only through each head's own softmax (the consensus is a constant): tau (p - q) / B
    got = gradient(lambda v: part_kd(part, v), z)
    np.testing.assert_allclose(got, tau * (p - q) / B, rtol=1e-4, atol=1e-6)


def test_consensus_needs_two_peers_and_a_known_average():
    with pytest.raises(ValueError, match="at least 2 peers"):
        knowledge.PeerConsensus().build_for_peers(1, C)
    with pytest.raises(ValueError, match="average"):
        knowledge.PeerConsensus(average="median")
    with pytest.raises(ValueError, match="average"):
        knowledge.leave_one_out_targets(np.zeros((1, 2, 3), "float32"), 1.0, "geometric")


def test_gradient_scale_is_identity_forward_and_scales_the_gradient():
    x = RNG.normal(size=(4, 3)).astype("float32")
    layer = GradientScale(0.25)
    np.testing.assert_array_equal(to_numpy(layer(x)), x)
    np.testing.assert_allclose(gradient(lambda v: keras.ops.multiply(layer(v), x), x), 0.25 * x, rtol=1e-6)
    for bad in (0.0, -1.0, 1.5):
        with pytest.raises(ValueError, match="scale"):
            GradientScale(bad)


def _one_sgd_step(model, x, y, lr=0.1):
    """Weights after one plain SGD step on the sum of the branches' cross-entropies."""
    wrapper = keras.Model(model.inputs, model.output["logits"])
    wrapper.compile(optimizer=keras.optimizers.SGD(lr),
                    loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * len(wrapper.outputs))
    wrapper.train_on_batch(x, [y] * len(wrapper.outputs))
    return [to_numpy(v).copy() for v in model.trainable_weights]


@pytest.mark.heavy
@pytest.mark.parametrize("per_branch_inputs", [False, True])
def test_backprop_rescaling_divides_the_trunk_update_by_the_branch_count(per_branch_inputs):
    plain = branches(per_branch_inputs=per_branch_inputs)
    twin = branches(per_branch_inputs=per_branch_inputs)
    twin.set_weights(plain.get_weights())
    rescaled = scale_trunk_gradients(twin)
    assert trunk_gradient_scale(rescaled) == pytest.approx(1 / M) and trunk_gradient_scale(twin) is None
    x = RNG.normal(size=(8, 8, 8, 1)).astype("float32")
    y = RNG.integers(0, 10, 8)
    inputs = [x] * M if per_branch_inputs else x
    for a, b in zip(plain(inputs)["logits"], rescaled(inputs)["logits"]):  # same forward pass
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    start = [to_numpy(v).copy() for v in plain.trainable_weights]
    after_plain = _one_sgd_step(plain, inputs, y)
    after_scaled = _one_sgd_step(rescaled, inputs, y)
    trunk = {id(v) for v in plain.get_layer("trunk").trainable_weights}
    for v, s, p, r in zip(plain.trainable_weights, start, after_plain, after_scaled):
        factor = 1 / M if id(v) in trunk else 1.0
        np.testing.assert_allclose(r - s, factor * (p - s), rtol=1e-4, atol=1e-7, err_msg=v.path)
    assert max(np.abs(p - s).max() for p, s in zip(after_plain, start)) > 1e-4


def test_multi_branch_gradient_scale_option_and_plain_export(tmp_path):
    student = branches(gradient_scale=0.5)
    assert trunk_gradient_scale(student) == 0.5
    with pytest.raises(ValueError, match="already rescales"):
        scale_trunk_gradients(student)
    rescaled = scale_trunk_gradients(branches())
    head = keras_okd.models.extract_branch(rescaled, 1)
    assert not any(isinstance(layer, GradientScale) for layer in head.layers)
    rescaled.save(tmp_path / "rescaled.keras")  # the whole model saves with its GradientScale layer
    loaded = keras.saving.load_model(tmp_path / "rescaled.keras")
    assert trunk_gradient_scale(loaded) == pytest.approx(1 / M)


def test_cl_preset_composes_the_paper_loss():
    student = branches()
    d = keras_okd.methods.cl(student)
    (part,) = d.knowledge
    assert isinstance(part, knowledge.PeerConsensus) and part.name == "cl"
    assert (part.temperature, part.weight, d.ce_weight, part.average) == (2.0, 0.5, 0.5, "logits")
    assert trunk_gradient_scale(d.students[0]) == pytest.approx(1 / M) and trunk_gradient_scale(student) is None
    assert d.schedules == {}
    assert keras_okd.methods.get("cl") is keras_okd.methods.cl
    plain = keras_okd.methods.cl(student, backprop_rescaling=False, beta=0.2, rampup_epochs=80)
    assert plain.students[0] is student and plain.ce_weight == pytest.approx(0.2)
    assert plain.knowledge[0].weight == pytest.approx(0.8) and "cl" in plain.schedules


@pytest.mark.parametrize("build, message", [
    (lambda: keras_okd.methods.cl(branches(), beta=1.5), "beta"),
    (lambda: keras_okd.methods.cl(branches(gradient_scale=0.5), backprop_rescaling=False), "already rescales"),
    (lambda: keras_okd.methods.cl([keras_okd.models.get("simple_cnn", input_shape=(8, 8, 1))] * 2), "multi-branch"),
    (lambda: keras_okd.methods.cl(branches(m=2), num_branches=3), "num_branches=3"),
])
def test_cl_refuses_bad_input(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.heavy
def test_cl_trains_on_digits():
    (x, y), (x_val, y_val) = keras_okd.data.digits_arrays()
    d = keras_okd.methods.cl(branches())
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    history = d.fit(x[:960], y[:960], validation_data=(x_val, y_val), batch_size=64, epochs=3, verbose=0).history
    assert history["ensemble_accuracy"][-1] > history["ensemble_accuracy"][0] + 0.05, history["ensemble_accuracy"]
    assert {"branch_0_cl", "val_branch_2_accuracy"} <= set(history) and np.isfinite(history["val_loss"]).all()
    peer = d.peer_model(0)
    assert not any(isinstance(layer, GradientScale) for layer in peer.layers)
    np.testing.assert_allclose(to_numpy(peer(x_val[:8])), to_numpy(d.students[0](x_val[:8])["logits"][0]),
                               rtol=1e-5, atol=1e-6)


def test_cl_ensemble_exports_without_the_gradient_scale_layer(tmp_path):
    import keras

    d = keras_okd.methods.cl(keras_okd.models.multi_branch("simple_cnn", 3, input_shape=(8, 8, 1), width=4))
    ensemble = d.ensemble_model()
    assert not any("GradientScale" in type(layer).__name__ for layer in ensemble._flatten_layers())
    path = str(tmp_path / "ensemble.keras")
    ensemble.save(path)
    x = np.zeros((2, 8, 8, 1), "float32")
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0), ensemble.predict(x, verbose=0),
                               rtol=1e-6)
