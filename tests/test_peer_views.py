"""Per-peer views (`keras_okd.data.RandomShiftFlip`, `peer_views`): exact against numpy, drawn from a saved seed state."""

import keras
import numpy as np
import pytest
from conftest import tiny_student, to_numpy

import keras_okd
from keras_okd.data import RandomShiftFlip, shift_flip


def numpy_pad_crop_flip(images, dy, dx, flip, padding):
    """The papers' augmentation written plainly: zero-pad, crop the H x W window at (dy, dx), flip left-right."""
    _, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out = np.stack([padded[b, dy[b]:dy[b] + h, dx[b]:dx[b] + w] for b in range(len(images))])
    return np.where(np.asarray(flip)[:, None, None, None], out[:, :, ::-1], out)


@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_shift_flip_equals_numpy_pad_crop_flip(dtype):
    rng = np.random.default_rng(0)
    padding = 3
    images = rng.integers(1, 100, size=(16, 7, 9, 2)).astype(dtype)  # no zeros: the border must come from padding
    dy, dx = rng.integers(0, 2 * padding + 1, size=(2, 16))
    dy[:2], dx[:2] = 0, 2 * padding  # the extreme windows
    flip = rng.integers(0, 2, size=16).astype(bool)
    want = numpy_pad_crop_flip(images, dy, dx, flip, padding)
    got = to_numpy(shift_flip(images, dy.astype("int32"), dx.astype("int32"), flip, padding))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, want)
    channels_first = to_numpy(
        shift_flip(images.transpose(0, 3, 1, 2), dy, dx, flip, padding, data_format="channels_first")
    )
    np.testing.assert_array_equal(channels_first, want.transpose(0, 3, 1, 2))


@pytest.mark.heavy
def test_layer_applies_its_own_draws_exactly():
    images = np.random.default_rng(1).normal(size=(32, 8, 8, 3)).astype("float32")
    layer, twin = RandomShiftFlip(2, seed=7), RandomShiftFlip(2, seed=7)
    for _ in range(2):  # the second call uses the advanced state
        dy, dx, flip = (to_numpy(t) for t in twin.draw(32))
        assert dy.min() >= 0 and dy.max() <= 4 and dx.min() >= 0 and dx.max() <= 4
        got = to_numpy(layer(images, training=True))
        np.testing.assert_array_equal(got, numpy_pad_crop_flip(images, dy, dx, flip, 2))
    np.testing.assert_array_equal(to_numpy(layer(images, training=False)), images)
    np.testing.assert_array_equal(to_numpy(layer(images[0], training=True)).shape, images[0].shape)


def test_every_output_image_is_a_shifted_or_flipped_copy():
    images = np.random.default_rng(2).uniform(1, 2, size=(24, 6, 6, 1)).astype("float32")
    out = to_numpy(RandomShiftFlip(1, seed=3)(images, training=True))
    candidates = [(dy, dx, f) for dy in range(3) for dx in range(3) for f in (False, True)]
    for b in range(len(images)):
        matches = [
            c for c in candidates
            if np.array_equal(out[b], numpy_pad_crop_flip(images[b:b + 1], [c[0]], [c[1]], [c[2]], 1)[0])
        ]
        assert matches, f"image {b} is not a shift/flip of its input"
    no_flip = to_numpy(RandomShiftFlip(1, flip=False, seed=3).draw(64)[2])
    assert not no_flip.any()


def test_draws_are_uniform_and_each_call_draws_anew():
    layer = RandomShiftFlip(4, seed=11)
    dy, dx, flip = (to_numpy(t) for t in layer.draw(18_000))
    for offsets in (dy, dx):
        frequencies = np.bincount(offsets, minlength=9) / len(offsets)
        np.testing.assert_allclose(frequencies, np.full(9, 1 / 9), atol=0.012)  # ~4.6 standard errors
    assert abs(flip.mean() - 0.5) < 0.015
    assert abs(np.corrcoef(dy, dx)[0, 1]) < 0.03  # the two offsets are drawn independently
    dy2 = to_numpy(layer.draw(18_000)[0])
    assert (dy2 != dy).mean() > 0.8  # a second call (the next peer, the next step) draws anew


def test_draws_are_a_function_of_the_seed_state():
    a, b, c = RandomShiftFlip(2, seed=5), RandomShiftFlip(2, seed=5), RandomShiftFlip(2, seed=6)
    np.testing.assert_array_equal(to_numpy(a.draw(50)[0]), to_numpy(b.draw(50)[0]))
    assert not np.array_equal(to_numpy(a.draw(50)[0]), to_numpy(c.draw(50)[0]))
    d = RandomShiftFlip(2, seed=99)
    d.seed_generator.state.assign(a.seed_generator.state.value)  # a restored state continues a's sequence
    np.testing.assert_array_equal(to_numpy(a.draw(50)[1]), to_numpy(d.draw(50)[1]))


def test_config_round_trip_and_bad_arguments():
    layer = RandomShiftFlip(3, flip=False, seed=4, name="v")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, RandomShiftFlip)
    assert (clone.padding, clone.flip, clone.seed, clone.name) == (3, False, 4, "v")
    with pytest.raises(ValueError, match="padding must be an integer >= 0"):
        RandomShiftFlip(-1)
    with pytest.raises(ValueError, match="padding must be an integer >= 0"):
        RandomShiftFlip(1.5)
    with pytest.raises(ValueError, match="data_format"):
        RandomShiftFlip(1, data_format="nhwc")
    with pytest.raises(ValueError, match=r"padding 8 must lie in \[0, min\(height, width\)\)"):
        keras_okd.data.peer_views(8, 8, padding=8)
    views = keras_okd.data.peer_views(32, 32)
    assert isinstance(views, RandomShiftFlip) and views.padding == 4 and views.flip and views.supports_jit


def _views_distiller(seed):
    students = [tiny_student(name="a"), tiny_student(name="b"), tiny_student(name="c")]
    d = keras_okd.methods.kdcl(students, views=RandomShiftFlip(1, seed=seed))
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    d.optimizer.build(d.trainable_variables)  # so that load_weights restores the momenta too
    return d


def test_seed_state_is_distiller_state_saved_with_its_weights(tmp_path):
    (x, y), _ = keras_okd.data.digits_arrays()
    d = _views_distiller(seed=21)
    state = d.views.seed_generator.state
    assert id(state) in {id(v) for v in d.non_trainable_variables}  # carried through JAX's stateless step
    d.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    # 2 steps x 3 peers x 2 draws (offsets, flips): every peer drew its own views in every step
    np.testing.assert_array_equal(to_numpy(state.value), [21, 12])
    path = str(tmp_path / "d.weights.h5")
    d.save_weights(path)
    resumed = _views_distiller(seed=21)
    resumed.load_weights(path)
    np.testing.assert_array_equal(to_numpy(resumed.views.seed_generator.state.value), [21, 12])
    d.fit(x[64:96], y[64:96], batch_size=32, epochs=1, verbose=0, shuffle=False)
    resumed.fit(x[64:96], y[64:96], batch_size=32, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(d.students, resumed.students):  # same weights, same data, same views: the same step
        for wa, wb in zip(a.weights, b.weights):
            np.testing.assert_allclose(to_numpy(wa), to_numpy(wb), rtol=1e-5, atol=1e-6)
