"""Multi-branch students: output structure, extracted branches, per-branch views, heads."""

import keras
import numpy as np
import pytest

import keras_okd
from keras_okd import models


def _images(batch=2, shape=(32, 32, 3), seed=0):
    return np.random.default_rng(seed).uniform(size=(batch, *shape)).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def resnet20_student():
    return models.multi_branch("resnet20", num_branches=3, num_classes=10)


def test_output_structure(resnet20_student):
    out = resnet20_student(_images(), training=False)
    assert set(out) == {"logits", "features", "shared_features"}
    assert isinstance(out["logits"], list) and isinstance(out["features"], list)
    assert [tuple(t.shape) for t in out["logits"]] == [(2, 10)] * 3
    assert [tuple(t.shape) for t in out["features"]] == [(2, 64)] * 3
    assert tuple(out["shared_features"].shape) == (2, 32)
    # Branches are independently initialised peers.
    assert not np.allclose(_np(out["logits"][0]), _np(out["logits"][1]))


def test_predict_returns_same_structure(resnet20_student):
    x = _images()
    pred = resnet20_student.predict(x, batch_size=2, verbose=0)
    out = resnet20_student(x, training=False)
    assert set(pred) == {"logits", "features", "shared_features"}
    assert len(pred["logits"]) == 3 and len(pred["features"]) == 3
    for a, b in zip(pred["logits"], out["logits"]):
        np.testing.assert_allclose(a, _np(b), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred["shared_features"], _np(out["shared_features"]), rtol=1e-4, atol=1e-5)


def test_extracted_branch_matches_branch_inside(resnet20_student):
    x = _images(seed=1)
    out = resnet20_student(x, training=False)
    for index in range(3):
        peer = models.extract_branch(resnet20_student, index)
        assert peer.input_shape == (None, 32, 32, 3)
        assert peer.output_shape == (None, 10)
        np.testing.assert_allclose(
            _np(peer(x, training=False)), _np(out["logits"][index]), rtol=1e-5, atol=1e-5
        )
    assert models.num_branches_of(resnet20_student) == 3


def test_extracted_branch_shares_weights(resnet20_student):
    peer = models.extract_branch(resnet20_student, 0)
    student_ids = {id(v) for v in resnet20_student.weights}
    assert peer.weights and all(id(v) in student_ids for v in peer.weights)


def test_extracted_branch_weights_load_into_the_single_network(resnet20_student):
    peer = models.extract_branch(resnet20_student, 2)
    single = models.get("resnet20", num_classes=10)
    single.set_weights(peer.get_weights())
    x = _images(seed=6)
    np.testing.assert_allclose(
        _np(single(x, training=False)), _np(peer(x, training=False)), rtol=1e-5, atol=1e-5
    )


def test_extracted_branch_has_only_core_keras_layers(resnet20_student):
    peer = models.extract_branch(resnet20_student, 2)

    def walk(model):
        for layer in model.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from walk(layer)

    for layer in walk(peer):
        assert type(layer).__module__.startswith("keras."), type(layer)


def test_clone_model_gives_an_independent_student(resnet20_student):
    # The distiller's mean teacher is keras.models.clone_model(student) + set_weights.
    clone = keras.models.clone_model(resnet20_student)
    clone.set_weights(resnet20_student.get_weights())
    assert {id(v) for v in clone.weights}.isdisjoint({id(v) for v in resnet20_student.weights})
    x = _images(seed=7)
    a, b = resnet20_student(x, training=False), clone(x, training=False)
    for p, q in zip(a["logits"], b["logits"]):
        np.testing.assert_allclose(_np(p), _np(q), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        _np(models.extract_branch(clone, 1)(x, training=False)), _np(b["logits"][1]),
        rtol=1e-5, atol=1e-5,
    )


def test_extract_branch_errors(resnet20_student):
    with pytest.raises(ValueError, match="out of range"):
        models.extract_branch(resnet20_student, 3)
    with pytest.raises(ValueError, match="trunk"):
        models.extract_branch(models.get("simple_cnn"), 0)


def test_per_branch_inputs_give_each_branch_its_view():
    student = models.multi_branch("simple_cnn", num_branches=3, num_classes=5, per_branch_inputs=True)
    assert len(student.inputs) == 3
    a, b = _images(shape=(8, 8, 1), seed=2), _images(shape=(8, 8, 1), seed=3)
    same = student([a, a, a], training=False)
    mixed = student([a, b, a], training=False)
    np.testing.assert_allclose(_np(same["logits"][0]), _np(mixed["logits"][0]), atol=1e-6)
    np.testing.assert_allclose(_np(same["logits"][2]), _np(mixed["logits"][2]), atol=1e-6)
    assert not np.allclose(_np(same["logits"][1]), _np(mixed["logits"][1]))
    # Shared features come from view 0.
    np.testing.assert_allclose(_np(same["shared_features"]), _np(mixed["shared_features"]), atol=1e-6)
    other = student([b, a, a], training=False)
    assert not np.allclose(_np(same["shared_features"]), _np(other["shared_features"]))
    # The extracted branch still takes a single image.
    peer = models.extract_branch(student, 1)
    np.testing.assert_allclose(
        _np(peer(b, training=False)), _np(mixed["logits"][1]), rtol=1e-5, atol=1e-5
    )


def test_invalid_num_branches():
    with pytest.raises(ValueError, match="num_branches"):
        models.multi_branch("simple_cnn", num_branches=0)


def test_peer_ensemble_head():
    head = keras_okd.knowledge.PeerEnsembleHead(7, name="ensemble")
    feats = [_images(shape=(4,), seed=s) for s in range(3)]
    logits = _np(head(feats))
    assert logits.shape == (2, 7)
    kernel, bias = (_np(w) for w in head.dense.weights)
    np.testing.assert_allclose(logits, np.concatenate(feats, -1) @ kernel + bias, rtol=1e-5, atol=1e-5)
    clone = keras_okd.knowledge.PeerEnsembleHead.from_config(head.get_config())
    assert clone.num_classes == 7 and clone.name == "ensemble"


def test_gate_head():
    gate = keras_okd.knowledge.GateHead(3)
    weights = _np(gate(_images(shape=(32,), seed=4), training=False))
    assert weights.shape == (2, 3)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    assert np.all(weights >= 0)
    assert len(gate.trainable_weights) == 4  # dense kernel/bias, BN gamma/beta
    assert gate.bn.momentum == pytest.approx(0.9) and gate.bn.epsilon == pytest.approx(1e-5)
    clone = keras_okd.knowledge.GateHead.from_config(gate.get_config())
    assert clone.num_branches == 3


@pytest.mark.heavy
def test_heads_on_a_student_save_and_load(tmp_path):
    student = models.multi_branch("simple_cnn", num_branches=2, num_classes=4, width=4)
    out = student.output
    ensemble = keras_okd.knowledge.PeerEnsembleHead(4, name="ensemble")(out["features"])
    gate = keras_okd.knowledge.GateHead(2, name="gate")(out["shared_features"])
    model = keras.Model(student.input, {"ensemble": ensemble, "gate": gate})
    x = _images(shape=(8, 8, 1), seed=5)
    before = model(x, training=False)
    path = tmp_path / "with_heads.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = loaded(x, training=False)
    for key in ("ensemble", "gate"):
        np.testing.assert_allclose(_np(before[key]), _np(after[key]), rtol=1e-6, atol=1e-6)
