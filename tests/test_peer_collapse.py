"""PeerCollapse: the collapse test on crafted logs (thresholds, kinds, patience, once per peer, logging and printing),
a real collapse provoked cheaply (a peer whose classifier is zeroed and frozen outputs uniform predictions), and a
healthy digits run that stays silent."""

import logging
import math
import types

import keras
import numpy as np
import pytest

import keras_okd
from keras_okd.distiller.callbacks import PeerCollapse, collapse_kind
from conftest import tiny_student

LN10 = math.log(10)


def test_collapse_kind_thresholds():
    # uniform: CE at ln C, chance accuracy, no spread
    assert collapse_kind(LN10, 0.10, 0.0, 10) == "uniform"
    # constant: chance accuracy and CE above ln C, with confident logits
    assert collapse_kind(3.5, 0.10, 4.0, 10) == "constant"
    # boundaries: accuracy <= 1.5 / C, CE >= 0.95 ln C, spread <= 0.5 (defaults)
    assert collapse_kind(0.95 * LN10, 0.15, 0.5, 10) == "uniform"
    assert collapse_kind(0.95 * LN10 - 1e-6, 0.10, 0.0, 10) is None
    assert collapse_kind(LN10, 0.15 + 1e-6, 0.0, 10) is None
    assert collapse_kind(LN10, 0.10, 0.5 + 1e-6, 10) == "constant"
    # measured: DKEL without ramp-up, epochs 1 and 3 of a branch (configs/fashion_mnist/dkel.yaml's probe)
    assert collapse_kind(6.41, 0.105, 5.28, 10) == "constant"
    assert collapse_kind(2.31, 0.094, 0.06, 10) == "uniform"
    # values of healthy peers measured after one epoch (benchmarks/fashion_mnist_recipe.py): not collapsed
    assert collapse_kind(2.3077, 0.2601, 0.8615, 10) is None
    assert collapse_kind(0.50, 0.82, 3.1, 10) is None
    # 100 classes: chance 1%, ln 100
    assert collapse_kind(math.log(100), 0.011, 0.01, 100) == "uniform"
    assert collapse_kind(math.log(100), 0.03, 0.01, 100) is None
    assert collapse_kind(LN10, 0.2, 0.0, 10, accuracy_factor=2.0) == "uniform"


def logs_of(peers):
    """Keras logs for `{peer: (ce, accuracy, logit_std)}`."""
    out = {}
    for peer, (ce, accuracy, spread) in peers.items():
        out.update({f"{peer}_ce": ce, f"{peer}_accuracy": accuracy, f"{peer}_logit_std": spread,
                    f"val_{peer}_accuracy": accuracy})
    return out


def monitor_on(peer_names, verbose=0, **kwargs):
    monitor = PeerCollapse(**kwargs)
    monitor.set_model(types.SimpleNamespace(num_classes=10, peer_names=peer_names))
    monitor.set_params({"verbose": verbose, "epochs": 5})
    monitor.on_train_begin()
    return monitor


HEALTHY = (0.6, 0.78, 2.5)
UNIFORM = (LN10, 0.10, 0.001)


def test_warns_once_per_peer_with_epoch_values_and_remedies(caplog, capsys):
    monitor = monitor_on(["student_0", "student_1", "student_2"])
    constant = (3.1, 0.1, 5.0)
    epochs = [{"student_0": HEALTHY, "student_1": HEALTHY, "student_2": HEALTHY},
              {"student_0": HEALTHY, "student_1": UNIFORM, "student_2": HEALTHY},
              {"student_0": HEALTHY, "student_1": UNIFORM, "student_2": constant},
              {"student_0": HEALTHY, "student_1": UNIFORM, "student_2": constant},
              {"student_0": HEALTHY, "student_1": UNIFORM, "student_2": constant},
              {"student_0": HEALTHY, "student_1": UNIFORM, "student_2": constant}]
    with caplog.at_level(logging.WARNING, logger="keras_okd"):
        for epoch, peers in enumerate(epochs):
            monitor.on_epoch_end(epoch, logs_of(peers))
    assert monitor.warned == {"student_1": (4, "uniform"), "student_2": (5, "constant")}
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("keras_okd")]
    assert len(messages) == 2
    assert messages[0].startswith("keras_okd: peer student_1 has collapsed to uniform predictions")
    assert "at epoch 4" in messages[0] and "cross-entropy 2.3026 (ln 10 = 2.3026)" in messages[0]
    assert "training accuracy 10.00% (chance 10.00%)" in messages[0] and "logit spread 0.0010" in messages[0]
    assert "lower the learning rate" in messages[0] and "warm-up" in messages[0] and "temperature" in messages[0]
    assert "peer student_2 has collapsed to constant predictions" in messages[1] and "epoch 5" in messages[1]
    assert capsys.readouterr().out == ""  # verbose 0: logged, not printed


def test_patience_needs_consecutive_epochs_and_fit_restarts_the_count(caplog):
    monitor = monitor_on(["branch_0"])  # default patience 3
    for epoch, peer in enumerate([UNIFORM, UNIFORM, HEALTHY, UNIFORM, UNIFORM, UNIFORM]):
        monitor.on_epoch_end(epoch, logs_of({"branch_0": peer}))
        assert ("branch_0" in monitor.warned) == (epoch == 5)
    monitor = monitor_on(["branch_0"], patience=1)
    monitor.on_epoch_end(0, logs_of({"branch_0": UNIFORM}))
    assert monitor.warned == {"branch_0": (1, "uniform")}
    monitor.on_train_begin()
    assert monitor.warned == {}


def test_prints_at_verbose_and_logs_once(caplog, capsys):
    monitor = monitor_on(["student_0"], verbose=1, patience=1)
    with caplog.at_level(logging.WARNING, logger="keras_okd"):
        monitor.on_epoch_end(0, logs_of({"student_0": UNIFORM}))
        monitor.on_epoch_end(1, logs_of({"student_0": UNIFORM}))
    assert capsys.readouterr().out.count("peer student_0 has collapsed") == 1
    assert sum("student_0 has collapsed" in r.getMessage() for r in caplog.records) == 1


def test_config_and_bad_arguments():
    monitor = PeerCollapse(ce_tolerance=0.1, accuracy_factor=2.0, spread=0.1, patience=4)
    again = PeerCollapse.from_config(monitor.get_config())
    assert again.get_config() == {"ce_tolerance": 0.1, "accuracy_factor": 2.0, "spread": 0.1, "patience": 4}
    assert PeerCollapse().get_config() == {"ce_tolerance": 0.05, "accuracy_factor": 1.5, "spread": 0.5, "patience": 3}
    for kwargs, match in (({"ce_tolerance": 1.0}, "ce_tolerance must be in"), ({"accuracy_factor": 0.5}, ">= 1"),
                          ({"spread": -1}, "spread must be >= 0"), ({"patience": 0}, "patience must be >= 1")):
        with pytest.raises(ValueError, match=match):
            PeerCollapse(**kwargs)


def digits(batch_size=128):
    train, val, n = keras_okd.data.get("digits", batch_size=batch_size, seed=0)
    return train, val, n


def collapse_records(caplog):
    return [r.getMessage() for r in caplog.records if "has collapsed" in r.getMessage()]


def test_a_real_collapsed_peer_is_reported_once(caplog):
    """Student 1's classifier is zeroed and frozen: its logits are 0 for every input (uniform output, CE = ln 10)."""
    train, _, _ = digits()
    students = [tiny_student(), tiny_student()]
    dead = students[1].layers[-1]
    dead.set_weights([np.zeros_like(w) for w in dead.get_weights()])
    dead.trainable = False
    distiller = keras_okd.methods.dml(students)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    monitor = PeerCollapse()
    with caplog.at_level(logging.WARNING, logger="keras_okd"):
        history = distiller.fit(train, epochs=4, verbose=0, callbacks=[monitor])
    assert history.history["student_1_ce"][0] == pytest.approx(LN10, abs=1e-4)
    assert history.history["student_1_logit_std"][0] == pytest.approx(0.0, abs=1e-6)
    messages = collapse_records(caplog)
    assert len(messages) == 1 and messages[0].startswith("keras_okd: peer student_1 has collapsed to uniform")
    assert "at epoch 3:" in messages[0]
    assert monitor.warned == {"student_1": (3, "uniform")}


def test_a_healthy_run_stays_silent(caplog):
    train, _, _ = digits()
    distiller = keras_okd.methods.dml([tiny_student(), tiny_student()])
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    monitor = PeerCollapse()
    with caplog.at_level(logging.WARNING, logger="keras_okd"):
        history = distiller.fit(train, epochs=3, verbose=0, callbacks=[monitor])
    assert collapse_records(caplog) == [] and monitor.warned == {}
    logs = {key: values[-1] for key, values in history.history.items()}
    for peer in ("student_0", "student_1"):
        assert logs[f"{peer}_accuracy"] > 0.5
        assert collapse_kind(logs[f"{peer}_ce"], logs[f"{peer}_accuracy"], logs[f"{peer}_logit_std"], 10) is None
