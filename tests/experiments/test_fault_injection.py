"""Fault injection: a training process killed (SIGKILL) at many moments, checkpoint and model writes included, reruns
to exactly the state and results of an uninterrupted run of the same seed.

The short chain (always run) kills one run directory five times, each rerun resuming from what the previous kill
left: after a training step, with a backup's weights in place but not its record, in the middle of a backup record's
write, in the middle of a history row, and in the middle of saving a student; a sixth run completes it. Set
KERAS_OKD_FAULTS=all to kill at every event an uninterrupted run goes through instead (one kill per distinct event,
chained the same way: about 60 processes per backend). The worker, tests/experiments/_fault_worker.py, names the
events.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_okd.experiments import config_from_dict, read_history, run_experiment

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "_fault_worker.py")

# 500 digits shuffled and shifted in tf.data, 2 steps an epoch, 3 epochs with a learning-rate step, TSB's bank.
CONFIG = {
    "experiment": "fault_injection",
    "method": {"name": "tsb", "params": {"warmup_epochs": 1}},
    "students": ["simple_cnn", "simple_cnn"],
    "dataset": {"name": "digits", "batch_size": 250, "validation_size": 1297, "augment": "shift"},
    "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4},
    "schedule": {"type": "step", "milestones": [2], "factor": 0.1},
    "epochs": 3,
}
SHORT_CHAIN = [
    "batch 0:1",                                # mid-epoch: nothing backed up yet
    "after-replace epoch_00001.weights.h5",     # a backup's weights in place, its record not written
    "mid-write epoch_00002.json",               # a backup record cut in half (backup 1 intact)
    "csv-row 1",                                # a history row cut short (backup 2 complete)
    "mid-write student_1.keras",                # all epochs done, saving the models
]
MODELS = ("student_0.keras", "student_1.keras", "ensemble.keras")


def _work(run_dir, log, kill_at=None):
    """Run the worker; returns its exit code (-9: killed) and what it printed."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [sys.executable, WORKER, json.dumps(CONFIG), str(run_dir), "0", str(log)] + ([kill_at] if kill_at else [])
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode not in (0, -9):
        raise AssertionError(f"worker failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.returncode, done.stdout


def _events(log):
    with open(log) as f:
        return [line.rstrip("\n") for line in f]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, in this process."""
    run_dir = tmp_path_factory.mktemp("faults") / "reference"
    results = run_experiment(config_from_dict(CONFIG), run_dir, 0, verbose=0)
    return run_dir, results


def _assert_same_run(run_dir, reference):
    ref_dir, ref_results = reference
    results = json.loads((run_dir / "results.json").read_text())
    timing = ("seconds", "session_seconds")
    assert {k: v for k, v in results.items() if k not in timing} == {
        k: v for k, v in ref_results.items() if k not in timing}
    assert (run_dir / "history.csv").read_bytes() == (ref_dir / "history.csv").read_bytes()
    assert [r["epoch"] for r in read_history(run_dir / "history.csv")] == [0, 1, 2]
    for name in MODELS:
        got = keras.saving.load_model(run_dir / name).get_weights()
        want = keras.saving.load_model(ref_dir / name).get_weights()
        assert len(got) == len(want)
        for u, v in zip(got, want):
            np.testing.assert_array_equal(u, v, err_msg=name)
    assert not (run_dir / "backup").exists()
    assert not [p for p in os.listdir(run_dir) if p.startswith(".tmp-")]


def _chain(run_dir, log, kills):
    """Kill one run directory at each event of `kills` in turn, then run it to the end; returns the kills made."""
    made = []
    for kill_at in kills:
        before = len(_events(log)) if os.path.exists(log) else 0
        code, _ = _work(run_dir, log, kill_at)
        seen = _events(log)[before:]
        if code == -9:
            assert seen[-1] == kill_at
            made.append(kill_at)
        else:  # the event did not come again (a resume skipped past it): the run completed
            assert seen[-1] == "done"
            return made
    code, out = _work(run_dir, log)
    assert code == 0
    if made and made[-1].startswith("mid-write student"):  # killed after the last epoch: nothing left to train
        assert f"all {CONFIG['epochs']} epochs are done" in out
    return made


@pytest.mark.heavy("torch")  # subprocesses start fastest on torch (no compilation)
def test_killed_anywhere_a_rerun_ends_as_the_uninterrupted_run(reference, tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "events.log"
    if os.environ.get("KERAS_OKD_FAULTS") == "all":
        probe_dir = tmp_path / "probe"
        assert _work(probe_dir, tmp_path / "probe.log")[0] == 0
        _assert_same_run(probe_dir, reference)
        kills = list(dict.fromkeys(e for e in _events(tmp_path / "probe.log") if e != "done"))
    else:
        kills = SHORT_CHAIN
    made = _chain(run_dir, log, kills)
    assert made == kills  # every kill happened: each comes later in a rerun than the restored backup
    print(f"{keras.backend.backend()}: {len(made)} kills, each rerun resumed; final state identical: {made}")
    _assert_same_run(run_dir, reference)
