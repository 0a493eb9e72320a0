"""Training a config: the CLI's `train --config`, a run directory's contents, resume after a crash, refusing another
config in a run directory, `evaluate`, and a report from a real run."""

import json
import os

import keras
import numpy as np
import pytest
from conftest import Crash

import keras_okd
from keras_okd import cli, experiments
from keras_okd.experiments import dump_config, load_config, read_history, run_experiment
from keras_okd.experiments.schedules import learning_rate, rate_at

# 500 training digits, shuffled and augmented (random shifts) in tf.data: two full batches an epoch and one validation
# batch, so JAX compiles one train step and one test step per run; no KD warm-up, so that the step is not traced again.
CONFIG = {
    "experiment": "unit_digits",
    "paper": "unit test",
    "method": {"name": "tsb", "params": {"warmup_epochs": 0}},
    "students": ["simple_cnn", "simple_cnn"],
    "dataset": {"name": "digits", "batch_size": 250, "validation_size": 1297, "augment": "shift"},
    "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4},
    "schedule": {"type": "step", "milestones": [2], "factor": 0.1},
    "epochs": 3,
    "seeds": [0],
}


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


class _Keep(keras.callbacks.Callback):
    """Keeps the distiller and the learning rate at each epoch start."""

    def __init__(self):
        super().__init__()
        self.rates = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.rates[epoch] = float(_np(self.model.optimizer.learning_rate))

    def on_train_end(self, logs=None):
        self.distiller = self.model


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted run, trained through `keras-okd train --config FILE --run-dir DIR`."""
    root = tmp_path_factory.mktemp("runs")
    path = root / "unit.yaml"
    dump_config(experiments.config_from_dict(CONFIG), path)
    keep = _Keep()

    def with_keep(*args, **kwargs):
        return run_experiment(*args, callbacks=[keep], **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(experiments, "run_experiment", with_keep)
        assert cli.main(["train", "--config", str(path), "--run-dir", str(root / "straight"), "--verbose", "0"]) == 0
    return {"dir": root / "straight", "keep": keep, "config": path, "root": root}


def test_step_schedule_counts_milestones_like_multisteplr():
    rate = learning_rate({"type": "step", "milestones": [150, 180, 210], "factor": 0.1}, 0.05, 240, 7)
    # the first and the last step of each epoch run at that epoch's rate
    for epoch, expected in zip((0, 149, 150, 179, 180, 210, 239), (0.05, 0.05, 0.005, 0.005, 5e-4, 5e-5, 5e-5)):
        assert [rate_at(rate, 7 * epoch), rate_at(rate, 7 * epoch + 6)] == pytest.approx([expected] * 2, rel=1e-6)


@pytest.mark.heavy
def test_resumed_run_equals_an_uninterrupted_one(straight):
    config = load_config(straight["config"])
    crashed = straight["root"] / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_experiment(config, crashed, 0, callbacks=[Crash(epoch=1, batch=0)], verbose=0)
    assert not (crashed / "results.json").exists() and (crashed / "backup").is_dir()
    assert [row["epoch"] for row in read_history(crashed / "history.csv")] == [0]

    keep = _Keep()
    resumed = run_experiment(config, crashed, 0, callbacks=[keep], verbose=0)
    assert sorted(keep.rates) == [1, 2]  # continued with the second epoch
    assert keep.rates[2] == pytest.approx(straight["keep"].rates[2]) == pytest.approx(0.005)

    a, b = straight["keep"].distiller, keep.distiller
    ta_a, ta_b = a.knowledge[0], b.knowledge[0]
    np.testing.assert_array_equal(_np(ta_b.counts), _np(ta_a.counts))
    assert int(_np(ta_a.counts).max()) == 3
    # the same data order and augmentation in the resumed epochs: bit-identical on CPU
    assert len(a.variables) == len(b.variables)
    for u, v in zip(a.variables, b.variables):
        np.testing.assert_array_equal(_np(v), _np(u), err_msg=u.path)
    assert int(_np(a.optimizer.iterations)) == int(_np(b.optimizer.iterations)) == 6
    assert [row["epoch"] for row in read_history(crashed / "history.csv")] == [0, 1, 2]
    straight_results = json.loads((straight["dir"] / "results.json").read_text())
    assert resumed["epochs"] == straight_results["epochs"] == 3
    assert resumed["net_accuracy"] == straight_results["net_accuracy"]
    assert resumed["final"] == straight_results["final"]
    assert not (crashed / "backup").exists()


def test_run_directory_contents(straight):
    run_dir = straight["dir"]
    for name in ("config.yaml", "history.csv", "results.json", "student_0.keras", "student_1.keras",
                 "ensemble.keras", "progress.json"):
        assert (run_dir / name).exists(), name
    results = json.loads((run_dir / "results.json").read_text())
    assert results["seed"] == 0 and results["backend"] == keras.backend.backend() and results["seconds"] > 0
    assert results["deploy"] == "students" and results["num_train_samples"] == 500
    row = read_history(run_dir / "history.csv")[-1]
    assert results["net_accuracy"] == pytest.approx([row["val_student_0_accuracy"], row["val_student_1_accuracy"]])
    assert results["ensemble_accuracy"] == pytest.approx(row["val_ensemble_accuracy"])
    assert load_config(run_dir / "config.yaml") == load_config(straight["config"])
    model = keras.saving.load_model(run_dir / "student_0.keras")
    assert model.output_shape == (None, 10)


def test_rerun_skips_a_finished_run_and_refuses_another_config(straight, capsys):
    argv = ["train", "--config", str(straight["config"]), "--run-dir", str(straight["dir"]), "--verbose", "0"]
    before = (straight["dir"] / "history.csv").read_text()
    assert cli.main(argv) == 0
    assert "already complete" in capsys.readouterr().out
    assert (straight["dir"] / "history.csv").read_text() == before
    assert cli.main(argv + ["--set", "epochs=4"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "epochs" in err


@pytest.mark.heavy
def test_evaluate_rescores_the_saved_models(straight, capsys):
    assert cli.main(["evaluate", str(straight["dir"])]) == 0
    assert "student_0" in capsys.readouterr().out
    scores = json.loads((straight["dir"] / "evaluation.json").read_text())["scores"]
    row = read_history(straight["dir"] / "history.csv")[-1]
    for name in ("student_0", "student_1", "ensemble"):
        assert scores[name]["accuracy"] == pytest.approx(row[f"val_{name}_accuracy"], abs=1e-6)
    assert scores["ensemble"]["matches_peers"]


def test_the_test_split_comes_in_batches_of_four_training_batches_in_the_loaders_order():
    from keras_okd.experiments import runner

    config = experiments.config_from_dict(CONFIG)
    _, test, *_ = runner.load_dataset(config, 0)
    _, own, _ = keras_okd.data.get("digits", seed=0, **{k: v for k, v in CONFIG["dataset"].items() if k != "name"})
    assert [int(y.shape[0]) for _, y in test] == [4 * 250, 1297 - 4 * 250]
    assert [int(y.shape[0]) for _, y in own] == [250] * 5 + [47]
    for ours, theirs in zip(zip(*[(x, y) for x, y in test]), zip(*[(x, y) for x, y in own])):
        np.testing.assert_array_equal(np.concatenate([_np(v) for v in ours]), np.concatenate([_np(v) for v in theirs]))


def test_report_of_a_real_run(straight, capsys):
    out = straight["root"] / "report"
    assert cli.main(["report", str(straight["dir"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    row = read_history(straight["dir"] / "history.csv")[-1]
    cell = f"{100 * row['val_student_0_accuracy']:.2f}"
    assert cell in (out / "report.md").read_text() and cell in printed
    assert str(out / "report.md") in printed
    assert [p for p in os.listdir(out) if p.endswith(".png")]


def test_branch_methods_get_a_multi_branch_student_and_views():
    config = experiments.config_from_dict({
        **CONFIG, "method": {"name": "pcl", "params": {"views": "standard"}},
        "students": {"model": "simple_cnn", "branches": 3}, "dataset": {"name": "digits"}})
    assert config["students"]["per_branch_inputs"] is True
    distiller, models = keras_okd.experiments.runner.build_distiller(config, 100, 10, (8, 8, 1))
    assert len(models) == 1 and len(models[0].inputs) == 3
    assert distiller.num_peers == 3 and distiller.views is not None
    assert keras_okd.experiments.runner.deployed(distiller) == "teacher"


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="three mean-teacher runs take 20-60 s on the "
                    "other backends on 2 CPU cores; resuming itself is checked on every backend by the TSB test above")
@pytest.mark.heavy
def test_resume_restores_the_mean_teacher(tmp_path):
    """DKEL on a 2-branch student: the teacher (EMA weights) and the decoupled initialisation resume exactly.
    (No per-peer views here: their random stream, like tf.data's, restarts on resume.)"""
    config = experiments.config_from_dict({**CONFIG, "method": {"name": "dkel", "params": {}}, "epochs": 2,
                                           "students": {"model": "simple_cnn", "branches": 2}})
    straight = _Keep()
    run_experiment(config, tmp_path / "straight", 0, callbacks=[straight], verbose=0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_experiment(config, tmp_path / "crashed", 0, callbacks=[Crash(epoch=1, batch=0)], verbose=0)
    resumed = _Keep()
    results = run_experiment(config, tmp_path / "crashed", 0, callbacks=[resumed], verbose=0)
    a, b = straight.distiller, resumed.distiller
    assert a.teachers and len(a.variables) == len(b.variables)
    for u, v in zip(a.variables, b.variables):
        np.testing.assert_allclose(_np(v), _np(u), rtol=1e-4, atol=1e-5, err_msg=u.path)
    assert results["deploy"] == "teacher"
    for name in ("student.keras", "branch_1.keras", "teacher_0.keras", "teacher_1.keras"):
        assert (tmp_path / "crashed" / name).exists()
