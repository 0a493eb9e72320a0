import numpy as np
import pytest
from conftest import gradient, to_numpy
from test_losses import np_kl, np_softmax

from keras_okd import knowledge, losses

RNG = np.random.default_rng(1)
B, M, C = 6, 3, 5


def kd_of(part, logits, context):
    out = part.targets(logits, context)
    return to_numpy(losses.pairwise_kd(out["targets"], logits, part.temperature, out["pair_weights"])), out


def context(index=None, training=True):
    return {"index": index, "labels": np.zeros(B, "int32"), "training": training, "sample_weight": None}


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_peer_distillation_matches_numpy(reduction):
    logits = RNG.normal(size=(B, M, C)).astype("float32")
    part = knowledge.PeerDistillation(temperature=3.0, reduction=reduction)
    part.build_for_peers(M, C)
    got, _ = kd_of(part, logits, context())
    p = np_softmax(logits.astype("float64"), 3.0)
    scale = 1.0 / (M - 1) if reduction == "mean" else 1.0
    want = [9.0 * scale * sum(np.mean(np_kl(p[:, j], p[:, i])) for j in range(M) if j != i) for i in range(M)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_spatial_integrator_matches_numpy():
    logits = RNG.normal(size=(B, M, C)).astype("float32")
    part = knowledge.SpatialIntegrator(temperature=4.0)
    part.build_for_peers(M, C)
    got, _ = kd_of(part, logits, context())
    p = np_softmax(logits.astype("float64"), 4.0)
    si = p.mean(1)
    np.testing.assert_allclose(got, [16.0 * np.mean(np_kl(si, p[:, i])) for i in range(M)], rtol=1e-5)


def test_targets_carry_no_gradient_to_other_peers():
    """Peer 0's DML loss depends on peer 1 only through a target: no gradient may reach peer 1's logits."""
    logits = RNG.normal(size=(B, 2, C)).astype("float32")
    part = knowledge.PeerDistillation(temperature=2.0)
    part.build_for_peers(2, C)

    def peer0_loss(z):
        out = part.targets(z, context())
        return losses.pairwise_kd(out["targets"], z, 2.0, out["pair_weights"])[0]

    g = gradient(peer0_loss, logits)
    assert np.all(g[:, 1] == 0.0)
    assert np.abs(g[:, 0]).sum() > 1e-4


def test_temporal_accumulator_three_shuffled_visits_match_numpy():
    n, beta, tau = 10, 0.8, 4.0
    part = knowledge.TemporalAccumulator(num_samples=n, beta=beta, temperature=tau)
    part.build_for_peers(M, C)
    bank = np.zeros((n, M, C))
    counts = np.zeros(n, int)
    visits = [RNG.permutation(n)[:B] for _ in range(3)] + [np.arange(B)]
    for step, index in enumerate(visits):
        logits = RNG.normal(size=(B, M, C)).astype("float32")
        got, out = kd_of(part, logits, context(index))
        # numpy: fold in, then read with the per-sample bias correction, then KD from the other peers (sum)
        p = np_softmax(logits.astype("float64"), tau)
        bank[index] = beta * bank[index] + (1 - beta) * p
        counts[index] += 1
        target = bank[index] / (1 - beta ** counts[index])[:, None, None]
        want = [tau**2 * sum(np.mean(np_kl(target[:, j], p[:, i])) for j in range(M) if j != i) for i in range(M)]
        np.testing.assert_allclose(got, want, rtol=2e-5, err_msg=f"step {step}")
        np.testing.assert_allclose(to_numpy(out["targets"]), target, rtol=1e-5, atol=1e-7)
        part.commit(out["state"], np.array(True))
        np.testing.assert_allclose(to_numpy(part.bank), bank, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(to_numpy(part.counts), counts)
    assert counts.max() >= 3
    # corrected rows of visited samples are distributions
    visited = counts > 0
    np.testing.assert_allclose(to_numpy(part.corrected_bank())[visited].sum(-1), 1.0, rtol=1e-5)


def test_temporal_accumulator_leaves_other_rows_and_skips_non_finite_steps():
    part = knowledge.TemporalAccumulator(num_samples=20, beta=0.5)
    part.build_for_peers(M, C)
    index = np.array([3, 7, 11, 0, 19, 5])
    out = part.targets(RNG.normal(size=(B, M, C)).astype("float32"), context(index))
    part.commit(out["state"], np.array(True))
    bank = to_numpy(part.bank)
    untouched = np.setdiff1d(np.arange(20), index)
    assert np.all(bank[untouched] == 0.0) and np.all(to_numpy(part.counts)[untouched] == 0)
    assert np.all(bank[index].sum(-1) > 0)
    before_bank, before_counts = bank.copy(), to_numpy(part.counts).copy()
    out = part.targets(RNG.normal(size=(B, M, C)).astype("float32"), context(index))
    part.commit(out["state"], np.array(False))
    np.testing.assert_array_equal(to_numpy(part.bank), before_bank)
    np.testing.assert_array_equal(to_numpy(part.counts), before_counts)


def test_temporal_accumulator_without_index_reads_as_first_visit():
    part = knowledge.TemporalAccumulator(num_samples=4, beta=0.8, temperature=2.0)
    part.build_for_peers(M, C)
    logits = RNG.normal(size=(B, M, C)).astype("float32")
    out = part.targets(logits, context(None, training=False))
    np.testing.assert_allclose(to_numpy(out["targets"]), np_softmax(logits.astype("float64"), 2.0), rtol=1e-5)
    assert "state" not in out


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: knowledge.TemporalAccumulator(num_samples=0), "num_samples"),
        (lambda: knowledge.TemporalAccumulator(num_samples=10, beta=1.0), "beta"),
        (lambda: knowledge.PeerDistillation(temperature=0.0), "temperature"),
        (lambda: knowledge.PeerDistillation(weight=-1.0), "weight"),
        (lambda: knowledge.PeerDistillation(reduction="max"), "reduction"),
    ],
)
def test_bad_part_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_parts_round_trip_their_config():
    part = knowledge.TemporalAccumulator(num_samples=7, beta=0.6, weight=0.3, temperature=2.0, reduction="mean")
    clone = knowledge.TemporalAccumulator.from_config(part.get_config())
    for key in ("num_samples", "beta", "weight", "temperature", "reduction", "name"):
        assert getattr(clone, key) == getattr(part, key)


def test_a_part_owns_its_schedule_and_saves_it_in_its_config():
    from keras_okd.knowledge import Decay, RampUp, WarmUp

    part = knowledge.PeerDistillation(schedule=[RampUp(10), Decay(gamma=1.0)])
    assert part.schedules == (RampUp(10), Decay(gamma=1.0))
    assert part.schedule_value(5) == RampUp(10)(5) * Decay(gamma=1.0)(5) and part.schedule_value(10) == np.exp(-10.0)
    part.set_schedule(part.schedule_value(5))
    np.testing.assert_allclose(float(to_numpy(part.schedule)), RampUp(10)(5) * np.exp(-5.0), rtol=1e-6)
    clone = knowledge.PeerDistillation.from_config(part.get_config())
    assert clone.schedules == part.schedules
    assert knowledge.TemporalAccumulator(10, schedule=WarmUp(3)).schedules == (WarmUp(3),)
    plain = knowledge.SpatialIntegrator()
    assert plain.schedules == () and plain.schedule_value(0) == 1.0 and "schedule" not in plain.get_config()
    with pytest.raises(TypeError, match=r"PeerDistillation: schedule must be .*got 3"):
        knowledge.PeerDistillation(schedule=3)
    with pytest.raises(TypeError, match=r"schedule must be .*got \[WarmUp\(epochs=2\), 'ramp'\]"):
        knowledge.PeerDistillation(schedule=[WarmUp(2), "ramp"])


def test_part_output_holds_one_of_its_two_forms():
    soft = knowledge.PartOutput(targets=np.ones((B, 1, C)) / C, pair_weights=np.ones((M, 1)), state={"k": 1})
    assert sorted(soft) == ["pair_weights", "state", "targets"] and soft["state"] == {"k": 1} and "losses" not in soft
    own = knowledge.PartOutput.of({"peer_losses": np.zeros(M), "losses": {"ce": 1.0}})
    assert own.losses == {"ce": 1.0} and own.targets is None and sorted(own) == ["losses", "peer_losses"]
    with pytest.raises(ValueError, match="targets and pair_weights, or peer_losses .one of the two.; got neither"):
        knowledge.PartOutput()
    with pytest.raises(ValueError, match="got targets, peer_losses"):
        knowledge.PartOutput(targets=np.ones((B, 1, C)), peer_losses=np.zeros(M))
    with pytest.raises(ValueError, match="got pair_weights"):
        knowledge.PartOutput(pair_weights=np.ones((M, 1)))
    with pytest.raises(ValueError, match=r"keys \['logits'\], which are not among"):
        knowledge.PartOutput.of({"peer_losses": np.zeros(M), "logits": np.zeros((B, M, C))})
