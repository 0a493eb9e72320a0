"""What a long run meets besides a kill (tests/experiments/test_fault_injection.py): damaged backups and histories,
a second process on one run directory, bad values in configs and on the command line, damaged run directories
for `evaluate` and `report`, Ctrl-C. Cheap: tiny Keras models and run directories written by hand."""

import json
import os

import keras
import numpy as np
import pytest

import keras_okd
from keras_okd import cli
from keras_okd.experiments import ConfigError, config_from_dict, dump_config, load_config, make_report, runner
from keras_okd.experiments.report import NoRunsError
from keras_okd.experiments.state import (
    RunCheckpoint,
    RunDirectoryError,
    RunLock,
    RunLockedError,
    atomic_write,
    history_text,
    read_history_rows,
)

GOOD = {
    "experiment": "unit",
    "method": {"name": "tsb", "params": {"warmup_epochs": 1}},
    "students": ["simple_cnn", "simple_cnn"],
    "dataset": {"name": "digits", "batch_size": 64},
    "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9},
    "epochs": 2,
}


# ------------------------------------------------------------------------------------------------------- checkpoints
def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    return model


_X = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
_Y = np.random.default_rng(1).normal(size=(16, 2)).astype("float32")


def _fit(tmp_path, epochs, extra=()):
    model = _model()
    checkpoint = RunCheckpoint(tmp_path / "backup", tmp_path / "history.csv", tmp_path / "progress.json")
    model.fit(_X, _Y, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[checkpoint, keras.callbacks.CSVLogger(tmp_path / "history.csv", append=True), *extra])
    return model, checkpoint


class _Stop(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("stop")


def test_a_checkpointed_fit_resumes_exactly_and_keeps_two_backups(tmp_path):
    straight, _ = _fit(tmp_path / "a", 4)
    with pytest.raises(RuntimeError, match="stop"):
        _fit(tmp_path / "b", 4, [_Stop(2)])
    assert sorted(os.listdir(tmp_path / "b" / "backup")) == [
        "epoch_00001.json", "epoch_00001.weights.h5", "epoch_00002.json", "epoch_00002.weights.h5"]
    resumed, checkpoint = _fit(tmp_path / "b", 4)
    assert checkpoint.restored["epoch"] == 2
    for u, v in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(u, v)
    assert (tmp_path / "b" / "history.csv").read_bytes() == (tmp_path / "a" / "history.csv").read_bytes()
    assert json.loads((tmp_path / "b" / "progress.json").read_text())["epochs"] == 4


class _Clock:
    """Stands for `time` in keras_okd.experiments.state: every call is a second after the previous one, so each
    epoch (one call at its begin, one at its end) takes one second of training."""

    def __init__(self):
        self.now = 0.0

    def time(self):
        self.now += 1.0
        return self.now


def test_a_backup_every_few_seconds_skips_epochs_and_still_resumes_exactly(tmp_path, monkeypatch):
    import keras_okd.experiments.state as state

    def fit(path, extra=(), every=2.0):
        monkeypatch.setattr(state, "time", _Clock())
        model = _model()
        checkpoint = RunCheckpoint(path / "backup", path / "history.csv", path / "progress.json", every_seconds=every)
        model.fit(_X, _Y, batch_size=8, epochs=5, shuffle=False, verbose=0,
                  callbacks=[checkpoint, keras.callbacks.CSVLogger(path / "history.csv", append=True), *extra])
        return model, checkpoint

    written = []
    monkeypatch.setattr(RunCheckpoint, "save", lambda self, epoch, save=RunCheckpoint.save: (
        written.append(epoch), save(self, epoch))[1])
    straight, _ = fit(tmp_path / "a")
    assert written == [2, 4, 5]  # two seconds of training between backups, and the last epoch always
    with pytest.raises(RuntimeError, match="stop"):
        fit(tmp_path / "b", [_Stop(3)])  # killed after epoch 3: its last backup is after epoch 2
    assert sorted(os.listdir(tmp_path / "b" / "backup")) == ["epoch_00002.json", "epoch_00002.weights.h5"]
    resumed, checkpoint = fit(tmp_path / "b")
    assert checkpoint.restored["epoch"] == 2
    for u, v in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(u, v)
    assert (tmp_path / "b" / "history.csv").read_bytes() == (tmp_path / "a" / "history.csv").read_bytes()
    with pytest.raises(ValueError, match="every_seconds must be a finite number >= 0.*got -1.0"):
        RunCheckpoint(tmp_path / "c", every_seconds=-1)


class _KillBetweenWrites(keras.callbacks.Callback):
    """Stands for a kill after a backup's weights are written and before its epoch record is: the weights writer
    raises once it has written the weights of the backup after epoch `epoch` (1-based)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def set_model(self, model):
        super().set_model(model)
        save, target = model.save_weights, self.epoch

        def save_then_die(*args, **kwargs):
            save(*args, **kwargs)
            if self.current == target:
                raise RuntimeError("killed")

        model.save_weights = save_then_die

    def on_epoch_end(self, epoch, logs=None):
        self.current = epoch + 1


@pytest.mark.heavy
def test_a_kill_between_a_backups_weights_and_its_record(tmp_path, monkeypatch):
    """Keras's BackupAndRestore (double_checkpoint too) resumes the newer weights under the older epoch and trains
    that epoch twice; RunCheckpoint ignores weights without their record and resumes exactly."""
    straight, _ = _fit(tmp_path / "a", 4)
    for double in (False, True):
        folder = tmp_path / f"keras_{double}"
        backup = keras.callbacks.BackupAndRestore(folder, double_checkpoint=double, delete_checkpoint=False)
        with pytest.raises(RuntimeError, match="killed"):
            _model().fit(_X, _Y, batch_size=8, epochs=4, shuffle=False, verbose=0,
                         callbacks=[_KillBetweenWrites(2), backup])
        resumed = _model()
        history = resumed.fit(_X, _Y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=[
            keras.callbacks.BackupAndRestore(folder, double_checkpoint=double)])
        assert len(history.epoch) == 3  # epochs 2, 3, 4: epoch 2 trained twice
        assert not all(np.array_equal(u, v) for u, v in zip(straight.get_weights(), resumed.get_weights()))
    from keras_okd.experiments import state

    write = state.atomic_json

    def record_then_die(path, value):
        if str(path).endswith("epoch_00002.json"):
            raise RuntimeError("killed")  # epoch_00002.weights.h5 is in place, its record is not
        write(path, value)

    monkeypatch.setattr(state, "atomic_json", record_then_die)
    with pytest.raises(RuntimeError, match="killed"):
        _fit(tmp_path / "b", 4)
    assert (tmp_path / "b" / "backup" / "epoch_00002.weights.h5").exists()
    monkeypatch.setattr(state, "atomic_json", write)
    resumed, checkpoint = _fit(tmp_path / "b", 4)
    assert checkpoint.restored["epoch"] == 1
    for u, v in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_keras_backup_metadata_cut_short_fails_every_rerun_but_not_here(tmp_path):
    with pytest.raises(RuntimeError, match="stop"):
        _model().fit(_X, _Y, epochs=4, verbose=0, callbacks=[
            keras.callbacks.BackupAndRestore(tmp_path / "backup", delete_checkpoint=False), _Stop(2)])
    meta = tmp_path / "backup" / "training_metadata.json"
    meta.write_text(meta.read_text()[:5])
    with pytest.raises(json.JSONDecodeError):
        _model().fit(_X, _Y, epochs=4, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(tmp_path / "backup")])
    _, checkpoint = _fit(tmp_path, 2)  # RunCheckpoint reads the same directory: reports it and starts over
    assert checkpoint.restored is None and "training_metadata.json is damaged" in " ".join(checkpoint.problems)


def test_a_damaged_backup_falls_back_to_the_previous_one(tmp_path, capsys):
    with pytest.raises(RuntimeError, match="stop"):
        _fit(tmp_path, 4, [_Stop(2)])
    weights = tmp_path / "backup" / "epoch_00002.weights.h5"
    with open(weights, "r+b") as f:  # same size, other bytes: only the hash can tell
        f.seek(100)
        f.write(b"\0" * 16)
    with pytest.raises(RuntimeError, match="stop"):  # epoch 2 (index 1) is trained again, then stopped at index 2
        _fit(tmp_path, 4, [_Stop(2)])
    err = capsys.readouterr().err
    assert f"{weights} is damaged (its size or SHA-256 differs" in err and "restored the backup after epoch 1" in err
    assert [r["epoch"] for r in read_history_rows(str(tmp_path / "history.csv"))[0]] == [0, 1]


def test_keras_backup_left_at_zero_bytes_restarts_cleanly(tmp_path, capsys):
    """The issue's first report: BackupAndRestore's `latest.weights.h5` at 0 bytes made every rerun fail."""
    with pytest.raises(RuntimeError, match="stop"):
        model = _model()
        model.fit(_X, _Y, epochs=4, verbose=0, callbacks=[
            keras.callbacks.BackupAndRestore(tmp_path / "backup", delete_checkpoint=False),
            keras.callbacks.CSVLogger(tmp_path / "history.csv", append=True), _Stop(3)])
    open(tmp_path / "backup" / "latest.weights.h5", "w").close()
    _, checkpoint = _fit(tmp_path, 2)
    err = capsys.readouterr().err
    assert "latest.weights.h5 does not load" in err and "training starts again from epoch 1" in err
    assert checkpoint.restored is None
    assert [r["epoch"] for r in read_history_rows(str(tmp_path / "history.csv"))[0]] == [0, 1]


def test_a_keras_backup_is_restored_with_its_history(tmp_path):
    with pytest.raises(RuntimeError, match="stop"):
        model = _model()
        model.fit(_X, _Y, epochs=4, verbose=0, callbacks=[
            keras.callbacks.BackupAndRestore(tmp_path / "backup", delete_checkpoint=False),
            keras.callbacks.CSVLogger(tmp_path / "history.csv", append=True), _Stop(2)])
    _, checkpoint = _fit(tmp_path, 4)
    assert checkpoint.restored["epoch"] == 2 and checkpoint.restored.get("legacy")
    assert [r["epoch"] for r in read_history_rows(str(tmp_path / "history.csv"))[0]] == [0, 1, 2, 3]
    assert not (tmp_path / "backup" / "latest.weights.h5").exists()


def test_history_cut_mid_row_is_repaired_on_resume(tmp_path):
    straight, _ = _fit(tmp_path / "a", 3)
    with pytest.raises(RuntimeError, match="stop"):
        _fit(tmp_path / "b", 3, [_Stop(2)])
    path = tmp_path / "b" / "history.csv"
    text = path.read_text()
    path.write_text(text + text.splitlines()[-1][:7])  # a third row cut short: a resume would glue onto it
    rows, problems = read_history_rows(str(path))
    assert [r["epoch"] for r in rows] == [0, 1] and "cut short" in problems[0]
    _fit(tmp_path / "b", 3)
    assert path.read_bytes() == (tmp_path / "a" / "history.csv").read_bytes()


def test_history_reader_skips_a_second_header_and_bad_rows(tmp_path):
    rows = [{"epoch": 0, "loss": 1.5, "val_loss": 2.0}, {"epoch": 1, "loss": 1.25, "val_loss": 1.75}]
    text = history_text(rows)
    assert text.splitlines()[0] == "epoch,loss,val_loss"
    path = tmp_path / "history.csv"
    path.write_text(text + text.splitlines()[0] + "\r\n" + "2,0.5\r\n")
    read, problems = read_history_rows(str(path))
    assert read == rows and len(problems) == 2
    assert "a second header" in problems[0] and "2 fields where the header has 3" in problems[1]


# ------------------------------------------------------------------------------------------------------------ lock
def test_a_second_owner_is_refused_with_the_first_ones_name(tmp_path):
    first = RunLock(tmp_path)
    assert first.acquire() is None
    with pytest.raises(RunLockedError) as info:
        RunLock(tmp_path).acquire()
    message = str(info.value)
    assert f"process {os.getpid()} on host" in message and "is in use by" in message
    first.release()
    with RunLock(tmp_path) as again:  # released: taken without a note
        assert again.note is None


def test_a_dead_owner_is_taken_over_with_a_note(tmp_path):
    record = {"pid": 999999999, "host": "elsewhere", "started": "2025-01-01 00:00:00", "command": "keras-okd train"}
    (tmp_path / "run.lock").write_text(json.dumps(record))  # written by a process that was killed (no OS lock held)
    with RunLock(tmp_path) as lock:
        assert "process 999999999 on host elsewhere" in lock.note and "takes it over" in lock.note
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()


def test_training_in_a_directory_another_process_owns_is_refused(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    dump_config(config_from_dict(GOOD), path)
    with RunLock(tmp_path / "run"):
        code = cli.main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run"), "--verbose", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "is in use by process" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "config.yaml").exists()


# ------------------------------------------------------------------------------------------------------------ values
@pytest.mark.parametrize("override, message", [
    ("method.params.beta=1.5", "method.params.beta: 1.5 is refused by the tsb preset: ValueError: TemporalAccumulator: "
                               "beta must lie in (0, 1)"),
    ("method.params.temperature=0", "method.params.temperature: 0.0 is refused by the tsb preset"),
    ("method.params.warmup_epochs=-1", "method.params.warmup_epochs: -1 is refused by the tsb preset: ValueError: "
                                       "WarmUp: epochs must be >= 0"),
    ("method.params.bank_dtype=int8", "method.params.bank_dtype: 'int8' is refused by the tsb preset: ValueError: "
                                      "TemporalAccumulator: bank_dtype must be one of float32, float16, bfloat16"),
    ("dataset.batch_size=0", "dataset.batch_size: got 0; accepted: a number >= 1."),
    ("optimizer.learning_rate=-0.1", "optimizer.learning_rate: got -0.1; accepted: a number > 0."),
    ("optimizer.momentum=1.5", "optimizer.momentum: got 1.5; accepted: a number in [0, 1)."),
    ("optimizer.learning_rate=.nan", "optimizer.learning_rate: must be a finite number, got nan."),
    ("seeds=[-1]", "seeds.0: got -1; accepted: an integer in [0, 2**32 - 1]"),
    ("method.name=tsbb", "method.name: unknown method 'tsbb' (did you mean 'tsb'?)"),
])
def test_bad_values_name_the_key_the_value_and_the_range(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    dump_config(config_from_dict(GOOD), path)
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    assert f"--set {override}: {message}" in str(info.value)


def test_a_bad_value_in_a_file_names_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    text = dump_config(config_from_dict(GOOD)).replace("beta: 0.8", "beta: 1.5")
    path.write_text(text)
    line = 1 + text.splitlines().index(next(x for x in text.splitlines() if "beta: 1.5" in x))
    with pytest.raises(ConfigError, match=rf"c.yaml:{line}: method.params.beta: 1.5 is refused"):
        load_config(path)


def test_the_bank_dtype_must_be_a_float():
    from keras_okd.knowledge import TemporalAccumulator

    for dtype in ("int8", "int32", "uint8", "bool", "float64"):
        with pytest.raises(ValueError, match=f"bank_dtype must be one of float32, float16, bfloat16.*{dtype}"):
            TemporalAccumulator(10, bank_dtype=dtype)
    assert TemporalAccumulator(10, bank_dtype="bfloat16").bank_dtype == "bfloat16"


@pytest.mark.parametrize("argv, message", [
    (["--config", "{missing}"], "no such config file"),
    (["--config", "{dir}"], "is a directory, not a config file"),
])
def test_config_paths_that_are_not_files(tmp_path, capsys, argv, message):
    argv = [a.format(missing=tmp_path / "nope.yaml", dir=tmp_path) for a in argv]
    assert cli.main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _stop_before_training(monkeypatch):
    """Let run_experiment check everything, then stop where training would start."""

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras_okd.OnlineDistiller, "fit", stop)


@pytest.mark.parametrize("override, message", [
    ("dataset.validation_size=5000", "dataset.validation_size: 'digits' refused it: digits: validation_size must be an "
                                     "int in [10, 1787]"),
    ("dataset.augment=rotate", "dataset.augment: 'digits' refused it: digits: augment must be None or 'shift'"),
    ("students=[vgg16,vgg16]", "students: ['vgg16', 'vgg16'] cannot be built for the 8x8x1 images of dataset "
                               "'digits'"),
])
@pytest.mark.heavy
def test_values_found_wrong_with_the_data_are_config_errors_before_anything_is_written(
        tmp_path, capsys, monkeypatch, override, message):
    _stop_before_training(monkeypatch)
    path = tmp_path / "c.yaml"
    dump_config(config_from_dict(GOOD), path)
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--config", str(path), "--set", override, "--run-dir", str(run_dir),
                     "--verbose", "0"]) == 2
    err = capsys.readouterr().err
    assert f"--set {override}: {message}" in err and "Traceback" not in err
    assert not run_dir.exists()  # nothing written, not even run.lock: the corrected rerun is not blocked


def test_a_strategy_of_another_backend_is_a_config_error(tmp_path):
    other = "jax_data_parallel" if keras.backend.backend() != "jax" else "mirrored"
    config = config_from_dict({**GOOD, "strategy": other})
    with pytest.raises(ConfigError, match=f"strategy: '{other}' needs KERAS_BACKEND="):
        runner.run_experiment(config, tmp_path, 0, verbose=0)
    assert not os.listdir(tmp_path)


def test_a_run_directory_that_is_a_file(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(RunDirectoryError, match="is a file, not a run directory"):
        runner.run_experiment(config_from_dict(GOOD), tmp_path / "run", 0, verbose=0)


def test_an_empty_dataset_is_refused_before_training(tmp_path, monkeypatch):
    import tensorflow as tf

    def empty(name, **options):
        ds = tf.data.Dataset.from_tensor_slices((np.zeros((0, 8, 8, 1), "float32"), np.zeros((0,), "int32")))
        return (keras_okd.data.pipeline(ds, 4, training=True, seed=0),
                keras_okd.data.pipeline(ds, 4, training=False), 0)

    monkeypatch.setattr(keras_okd.data, "get", empty)
    with pytest.raises(ConfigError, match="dataset: 'digits' has no training samples"):
        runner.run_experiment(config_from_dict(GOOD), tmp_path, 0, verbose=0)


def test_a_config_whose_run_never_completed_an_epoch_may_be_replaced(tmp_path, monkeypatch, capsys):
    _stop_before_training(monkeypatch)
    dump_config({**config_from_dict(GOOD, ["optimizer.learning_rate=5"]), "seeds": [0]}, tmp_path / "config.yaml")
    (tmp_path / "history.csv").write_text("epoch,loss\r\n")
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment(config_from_dict(GOOD), tmp_path, 0, verbose=0)
    assert "never completed an epoch; starting it over with this config" in capsys.readouterr().out
    assert load_config(tmp_path / "config.yaml")["optimizer"]["learning_rate"] == 0.05
    (tmp_path / "results.json").write_text("{}")  # a finished run: another config is refused
    with pytest.raises(RunDirectoryError, match="holds a run of a different config"):
        runner.run_experiment(config_from_dict(GOOD, ["epochs=3"]), tmp_path, 0, verbose=0)


def test_cifar_in_an_empty_data_dir_is_dataset_not_found(tmp_path):
    with pytest.raises(keras_okd.data.DatasetNotFoundError, match=f"cifar10 .train. is not prepared in {tmp_path}"):
        keras_okd.data.load_cifar("cifar10", "train", data_dir=str(tmp_path), download=False)


def test_ctrl_c_says_how_to_resume_and_exits_130(tmp_path, capsys, monkeypatch):
    _stop_before_training(monkeypatch)
    path = tmp_path / "c.yaml"
    dump_config(config_from_dict(GOOD), path)
    code = cli.main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run"), "--verbose", "0"])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err


def test_a_full_disk_says_the_backup_is_intact(tmp_path, capsys, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "config.yaml"))

    monkeypatch.setattr(runner, "atomic_write", full)
    path = tmp_path / "c.yaml"
    dump_config(config_from_dict(GOOD), path)
    assert cli.main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run"), "--verbose", "0"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "rerun the same command to resume" in err and "Traceback" not in err


def test_a_bad_backup_interval_exits_2_naming_the_value(capsys):
    for value in ("-5", "inf", "soon"):
        with pytest.raises(SystemExit) as info:
            cli.main(["train", "--backup-every", value])
        err = capsys.readouterr().err
        assert info.value.code == 2 and f"--backup-every: {value}: accepted: a finite number of seconds >= 0" in err


def test_demo_options_out_of_range_exit_2(capsys):
    for argv, message in ((["--batch-size", "0"], "--batch-size 0: accepted: an integer >= 1"),
                          (["--lr", "-1"], "--lr -1.0: accepted: a finite number > 0"),
                          (["--model", "nope"], "--model 'nope' is not a zoo name")):
        with pytest.raises(SystemExit) as info:
            cli.main(["train", *argv])
        assert info.value.code == 2 and message in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- damaged run dirs
@pytest.fixture
def finished(tmp_path):
    """A run directory as a finished run leaves it, with untrained students (no training needed)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = {**config_from_dict(GOOD), "seeds": [0]}
    dump_config(config, run_dir / "config.yaml")
    keras.utils.set_random_seed(0)
    distiller, models = runner.build_distiller(config, 100, 10, (8, 8, 1))
    files = runner.save_models(distiller, models, config["students"], run_dir)
    rows = [{"epoch": e, "loss": 1.0, "val_ensemble_accuracy": 0.5, "val_student_0_accuracy": 0.4,
             "val_student_1_accuracy": 0.45, "val_student_0_ce": 2.0, "val_student_1_ce": 2.0} for e in range(2)]
    (run_dir / "history.csv").write_text(history_text(rows))
    (run_dir / "results.json").write_text(json.dumps({"epochs": 2, **files}))
    return run_dir


def test_evaluate_names_missing_and_damaged_files_and_scores_the_rest(finished, capsys):
    os.remove(finished / "student_0.keras")
    with open(finished / "student_1.keras", "r+b") as f:
        f.truncate(os.path.getsize(finished / "student_1.keras") // 2)
    (finished / "ensemble.keras").write_bytes(b"not a zip")
    result = runner.evaluate_run(finished)
    scores = result["scores"]
    assert scores["student_0"]["error"] == "is missing"
    assert scores["student_1"]["error"].startswith("is damaged (not a .keras zip archive")
    assert scores["ensemble"]["error"].startswith("is damaged")
    assert "peers_mean" not in scores  # no peer loads: nothing to average
    assert len(result["problems"]) == 3
    assert cli.main(["evaluate", str(finished)]) == 1
    err = capsys.readouterr().err
    assert f"{finished / 'student_0.keras'} is missing" in err and "Traceback" not in err


def test_evaluate_scores_the_peers_mean_when_the_ensemble_is_damaged(finished):
    (finished / "ensemble.keras").write_bytes(b"PK\x03\x04 cut")
    scores = runner.evaluate_run(finished)["scores"]
    assert "accuracy" in scores["student_0"] and "accuracy" in scores["student_1"]
    assert scores["ensemble"]["error"].startswith("is damaged")
    assert scores["peers_mean"]["from"] == "mean of the deployed peers' probabilities"


def test_report_reads_around_damage_and_says_so(finished, tmp_path, capsys):
    history = finished / "history.csv"
    history.write_text(history.read_text() + "2,0.9,0.5")  # a row cut short
    (finished / "results.json").write_text('{"epochs": ')
    report = make_report([finished], tmp_path / "out")
    assert report["runs"] == 1
    assert any("cut short" in p for p in report["problems"]) and any("results.json is damaged" in p
                                                                      for p in report["problems"])
    assert "| 40.00 | 45.00 | 50.00 |" in report["table"]
    assert cli.main(["report", str(finished), "--out", str(tmp_path / "out2")]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_report_on_runs_without_a_complete_epoch_says_why(finished, tmp_path, capsys):
    (finished / "history.csv").write_text("epoch,loss\r\n0,1.")
    with pytest.raises(NoRunsError, match="history.csv has no complete epoch yet"):
        make_report([finished], tmp_path / "out")
    assert cli.main(["report", str(finished)]) == 2
    assert "no complete epoch" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "results.json"
    atomic_write(path, "old")

    def failing(temporary):
        with open(temporary, "w") as f:
            f.write("half")
        raise OSError("disk full")

    from keras_okd.experiments.state import atomic_save

    with pytest.raises(OSError, match="disk full"):
        atomic_save(failing, path)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]
