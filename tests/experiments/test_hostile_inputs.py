"""What a hostile tester broke (issue 17): resumes that mix two setups, backups that load part-way, damaged
histories, full and read-only disks, YAML edge cases, plugins that exit, non-finite state and odd students and labels.
Each test injects the fault and checks the state after it."""

import errno
import os
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_okd import cli
from keras_okd.experiments import ConfigError, ResumeMismatchError, config_from_dict, dump_config, load_config, runner
from keras_okd.experiments import state
from keras_okd.experiments.state import DiskError, RunCheckpoint, atomic_write, disk_guarded
from test_reliability import GOOD, _Stop, finished  # noqa: F401 - the config, a stop, the finished-run fixture

_X = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
_Y = np.random.default_rng(1).normal(size=(16, 2)).astype("float32")


def _model(outputs=2, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(outputs, name="out")(hidden))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    return model


def _fit(folder, epochs, config=None, extra=(), verbose=1, model=None):
    model = model or _model()
    checkpoint = RunCheckpoint(folder / "backup", folder / "history.csv", folder / "progress.json", verbose=verbose,
                               config=config)
    model.fit(_X, _Y, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[checkpoint, keras.callbacks.CSVLogger(folder / "history.csv", append=True), *extra])
    return model, checkpoint


def _killed(folder, config=None):
    """A run stopped after its epoch-2 backup."""
    with pytest.raises(RuntimeError, match="stop"):
        _fit(folder, 4, config, [_Stop(2)])
    return {name: (folder / "backup" / name).read_bytes() for name in os.listdir(folder / "backup")}


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


# ------------------------------------------------------------------------------------------------ resumes that lie
def test_a_resume_with_another_config_is_refused_naming_the_difference(tmp_path):
    backups = _killed(tmp_path, {"optimizer": {"learning_rate": 0.05}, "epochs": 4})
    history = (tmp_path / "history.csv").read_bytes()
    model = _model(seed=7)
    fresh = _weights(model)
    with pytest.raises(ResumeMismatchError) as info:
        _fit(tmp_path, 4, {"optimizer": {"learning_rate": 0.5}, "epochs": 4}, model=model)
    message = str(info.value)
    assert "optimizer.learning_rate: 0.05 in the backup, 0.5 now" in message
    assert "pass another --run-dir (a new run)" in message and "epoch_00002.json" in message
    for before, after in zip(fresh, _weights(model)):  # nothing loaded, nothing written
        np.testing.assert_array_equal(before, after)
    assert {n: (tmp_path / "backup" / n).read_bytes() for n in os.listdir(tmp_path / "backup")} == backups
    assert (tmp_path / "history.csv").read_bytes() == history


def test_a_resume_under_another_keras_version_is_refused(tmp_path, monkeypatch):
    _killed(tmp_path, {"epochs": 4})
    versions = state.setup_versions()
    monkeypatch.setattr(state, "setup_versions", lambda: {**versions, "keras": "0.0.1"})
    checkpoint = RunCheckpoint(tmp_path / "backup", config={"epochs": 4})
    with pytest.raises(ResumeMismatchError, match=f"version of keras: '{keras.__version__}' in the backup, "
                                                  "'0.0.1' now"):
        checkpoint.check_resume()


def test_a_resume_with_the_same_setup_is_accepted(tmp_path):
    _killed(tmp_path, {"epochs": 4})
    _, checkpoint = _fit(tmp_path, 4, {"epochs": 4})
    assert checkpoint.restored["epoch"] == 2


def test_a_backup_that_fails_to_load_part_way_is_not_applied(tmp_path, capsys):
    """The issue's DML-over-TSB resume: the load failed after some layers and left them with the backup's weights."""
    _killed(tmp_path)
    model = _model(outputs=3, seed=7)  # the same first layer, another second one: the load fails part-way
    model.optimizer.build(model.trainable_variables)
    fresh = _weights(model)
    checkpoint = RunCheckpoint(tmp_path / "backup", verbose=0)
    checkpoint.set_model(model)
    checkpoint.on_train_begin()
    assert checkpoint.restored is None
    for before, after in zip(fresh, _weights(model)):
        np.testing.assert_array_equal(before, after)
    err = capsys.readouterr().err
    assert "does not load" in err and "nothing of it was applied" in err
    assert "training starts again from epoch 1" in err


def test_a_damaged_backup_is_reported_at_verbose_0(tmp_path, capsys):
    _killed(tmp_path)
    weights = tmp_path / "backup" / "epoch_00002.weights.h5"
    data = bytearray(weights.read_bytes())
    for i in range(100):  # 100 flipped bytes, as in the issue
        data[200 + i] ^= 0xFF
    weights.write_bytes(bytes(data))
    _, checkpoint = _fit(tmp_path, 4, verbose=0)
    err = capsys.readouterr().err
    assert checkpoint.restored["epoch"] == 1
    assert f"warning: {weights} is damaged" in err and "restored the backup after epoch 1" in err


@pytest.mark.heavy
def test_editing_a_killed_runs_config_yaml_does_not_resume_it(tmp_path, capsys):
    """The issue's learning-rate edit: `train --config RUN/config.yaml --run-dir RUN` after editing config.yaml."""
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="stop"):
        runner.run_experiment(config_from_dict({**GOOD, "epochs": 3}), run_dir, 0, callbacks=[_Stop(1)], verbose=0)
    path = run_dir / "config.yaml"
    path.write_text(path.read_text().replace("learning_rate: 0.05", "learning_rate: 0.5"))
    backup = sorted(os.listdir(run_dir / "backup"))
    history = (run_dir / "history.csv").read_bytes()
    code = cli.main(["train", "--config", str(path), "--run-dir", str(run_dir), "--verbose", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "optimizer.learning_rate: 0.05 in the backup, 0.5 now" in err
    assert sorted(os.listdir(run_dir / "backup")) == backup and (run_dir / "history.csv").read_bytes() == history


# ------------------------------------------------------------------------------------------------ damaged history
_GARBAGE = bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8))


def test_garbage_in_history_csv_is_moved_aside_and_the_history_rebuilt_from_the_backup(tmp_path, capsys):
    straight, _ = _fit(tmp_path / "a", 4)
    _killed(tmp_path / "b")
    history = tmp_path / "b" / "history.csv"
    history.write_bytes(history.read_bytes() + _GARBAGE)  # the issue: every rerun failed with UnicodeDecodeError
    resumed, checkpoint = _fit(tmp_path / "b", 4, verbose=0)
    assert checkpoint.restored["epoch"] == 2
    aside = tmp_path / "b" / "history.csv.damaged"
    assert aside.read_bytes().endswith(_GARBAGE)
    err = capsys.readouterr().err
    assert f"{history} is damaged" in err and f"moved aside to {aside}" in err
    assert history.read_bytes() == (tmp_path / "a" / "history.csv").read_bytes()
    for u, v in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_report_reads_a_history_with_garbage_bytes(tmp_path, capsys):
    from keras_okd.experiments import make_report
    from keras_okd.experiments.state import history_text

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dump_config({**config_from_dict(GOOD), "seeds": [0]}, run_dir / "config.yaml")
    rows = [{"epoch": e, "loss": 1.0, "val_ensemble_accuracy": 0.5, "val_student_0_accuracy": 0.4,
             "val_student_1_accuracy": 0.45} for e in range(2)]
    (run_dir / "history.csv").write_bytes(history_text(rows).encode() + _GARBAGE)
    report = make_report([run_dir], tmp_path / "out")
    assert report["runs"] == 1 and "| 40.00 | 45.00 | 50.00 |" in report["table"]
    assert any("bytes that are not text" in p for p in report["problems"])
    assert cli.main(["report", str(run_dir), "--out", str(tmp_path / "out2")]) == 1
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- full and read-only disks


def _no_temporaries(folder):
    return [p for root, _, files in os.walk(folder) for p in files if p.startswith(".tmp-")]


def test_a_writer_failing_on_a_full_disk_is_one_disk_error_and_leaves_no_temporary(tmp_path):
    _killed(tmp_path)
    backups = {name: (tmp_path / "backup" / name).read_bytes() for name in os.listdir(tmp_path / "backup")}
    model = _model()

    def h5py_like(path):  # HDF5 reports a full disk as text, after writing part of the file
        with open(path, "wb") as f:
            f.write(b"\x89HDF half")
        raise RuntimeError("Can't write data (file write failed: time = now, filename = x, errno = 28, error "
                           "message = 'No space left on device')")

    model.save_weights = h5py_like
    checkpoint = RunCheckpoint(tmp_path / "backup")
    checkpoint.set_model(model)
    with pytest.raises(DiskError) as info:
        checkpoint.save(3)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == f"cannot write {tmp_path / 'backup' / 'epoch_00003.weights.h5'}: No space left on device"
    assert _no_temporaries(tmp_path) == []
    assert {n: (tmp_path / "backup" / n).read_bytes() for n in os.listdir(tmp_path / "backup")} == backups


def test_a_backup_is_not_started_without_room_for_it_beside_the_old_ones(tmp_path, monkeypatch):
    _killed(tmp_path)
    backups = {name: (tmp_path / "backup" / name).read_bytes() for name in os.listdir(tmp_path / "backup")}
    size = os.path.getsize(tmp_path / "backup" / "epoch_00002.weights.h5")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(state.shutil, "disk_usage", lambda folder: usage._replace(free=size))
    calls = []
    model = _model()
    model.save_weights = calls.append
    checkpoint = RunCheckpoint(tmp_path / "backup")
    checkpoint.set_model(model)
    with pytest.raises(DiskError, match=r"epoch_00003.weights.h5: No space left on device \(it needs about "):
        checkpoint.save(3)
    assert calls == []  # the writer never started, and neither old backup was deleted to make room
    assert {n: (tmp_path / "backup" / n).read_bytes() for n in os.listdir(tmp_path / "backup")} == backups


def test_a_read_only_disk_is_one_disk_error(tmp_path):
    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system", path)

    with pytest.raises(DiskError, match=f"cannot write {tmp_path / 'x.json'}: Read-only file system"):
        state.atomic_save(read_only, tmp_path / "x.json")
    atomic_write(tmp_path / "y.json", "{}")  # a plain write still works
    assert (tmp_path / "y.json").read_text() == "{}"


def test_callbacks_that_write_their_own_files_name_them_on_a_full_disk(tmp_path):
    import tensorflow as tf

    class Board(keras.callbacks.Callback):  # TensorBoard's summary writer raises this when the disk is full
        def on_epoch_end(self, epoch, logs=None):
            raise tf.errors.ResourceExhaustedError(None, None, f"{tmp_path}/tb/events.out; No space left on device")

    class Logger(keras.callbacks.Callback):  # CSVLogger's open file: an OSError without a file name
        def on_epoch_end(self, epoch, logs=None):
            raise OSError(errno.ENOSPC, "No space left on device")

        def on_train_end(self, logs=None):
            raise ValueError("not a disk problem")

    with pytest.raises(DiskError, match=f"cannot write {tmp_path / 'tb'}: No space left on device"):
        disk_guarded(Board(), tmp_path / "tb").on_epoch_end(0)
    logger = disk_guarded(Logger(), tmp_path / "history.csv")
    with pytest.raises(DiskError, match="history.csv: No space left on device"):
        logger.on_epoch_end(0)
    with pytest.raises(ValueError, match="not a disk problem"):
        logger.on_train_end()


def test_evaluate_prints_its_scores_when_the_disk_is_read_only(finished, monkeypatch, capsys):
    def read_only(path, value):
        raise DiskError(errno.EROFS, str(path))

    monkeypatch.setattr(runner, "atomic_json", read_only)
    assert cli.main(["evaluate", str(finished)]) == 1
    captured = capsys.readouterr()
    assert f"| {finished} | student_0 | " in captured.out and f"| {finished} | ensemble | " in captured.out
    assert "Wrote" not in captured.out
    assert f"cannot write {finished / 'evaluation.json'}: Read-only file system; the scores are not saved" in \
        captured.err and "Traceback" not in captured.err


def test_report_prints_its_table_when_the_disk_is_read_only_and_out_can_point_elsewhere(finished, monkeypatch,
                                                                                        tmp_path, capsys):
    from keras_okd.experiments import report

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(report.os, "makedirs", read_only)
    assert cli.main(["report", str(finished)]) == 1
    captured = capsys.readouterr()
    assert "| 40.00 | 45.00 | 50.00 |" in captured.out and "Wrote" not in captured.out
    assert "Read-only file system: the report is not saved" in captured.err and "Pass --out DIR" in captured.err
    assert "Traceback" not in captured.err
    monkeypatch.undo()
    assert cli.main(["report", str(finished), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.md").exists()


def _can_mount_tmpfs(folder):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


@pytest.mark.heavy("tensorflow")
def test_a_run_on_a_700_kb_tmpfs_stops_with_one_message(tmp_path):
    """The issue's segmentation fault (rc 139 after 54 h5py tracebacks, a `.tmp-` file left): needs root and mount."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _can_mount_tmpfs(disk):
        pytest.skip("mounting a tmpfs needs root and mount")
    try:
        path = tmp_path / "c.yaml"
        dump_config(config_from_dict({**GOOD, "epochs": 3}), path)
        done = subprocess.run([sys.executable, "-m", "keras_okd.cli", "train", "--config", str(path), "--run-dir",
                               str(disk / "run"), "--verbose", "0"], capture_output=True, text=True, timeout=600,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        assert done.returncode == 1, done.stderr[-2000:]
        assert "keras-okd train: cannot write " in done.stderr and "No space left on device" in done.stderr
        assert "Traceback" not in done.stderr and _no_temporaries(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ------------------------------------------------------------------------------------------------ config files


def _config_file(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def test_a_duplicate_key_is_an_error_naming_both_lines(tmp_path, capsys):
    text = dump_config(config_from_dict(GOOD)).replace("optimizer: {name: sgd, learning_rate: 0.05",
                                                       "optimizer: {name: sgd, learning_rate: 0.05, learning_rate: 5.0")
    text += "epochs: 4\n"
    path = _config_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = text.splitlines()
    epochs = [i + 1 for i, line in enumerate(lines) if line.startswith("epochs:")]
    optimizer = next(i + 1 for i, line in enumerate(lines) if line.startswith("optimizer:"))
    assert info.value.errors == [
        f"{path}:{optimizer}: learning_rate: given twice, at lines {optimizer} and {optimizer} (YAML keeps the last "
        "silently); keep one.",
        f"{path}:{epochs[1]}: epochs: given twice, at lines {epochs[0]} and {epochs[1]} (YAML keeps the last "
        "silently); keep one."]
    assert cli.main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    assert "given twice" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_nested_alias_bomb_is_refused_fast(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):  # 9 levels of nine: the 9 levels reached 5.5 GB
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    path = _config_file(tmp_path, "\n".join(levels) + "\nexperiment: x\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"holds 4,412,961,518 YAML nodes once its aliases \(\*name\) are expanded, "
                                          r"more than the 20,000"):
        load_config(path)
    assert time.perf_counter() - start < 5  # refused without expanding (it took ~80 s at 7 levels before)


def test_a_self_referring_alias_and_deep_nesting_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="an alias refers to the node that contains it"):
        load_config(_config_file(tmp_path, "experiment: &a [x, *a]\n"))
    with pytest.raises(ConfigError, match="nests its values deeper"):
        load_config(_config_file(tmp_path, "x: " + "[" * 5000 + "]" * 5000 + "\n", "deep.yaml"))


def test_random_bytes_as_a_config_are_a_clean_config_error(tmp_path, capsys):
    path = _config_file(tmp_path, bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8)))
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: is not UTF-8 text \(byte 0x[0-9a-f]{2} at offset \d+\)"):
        load_config(path)
    assert cli.main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is not UTF-8 text" in err and "Traceback" not in err
    big = _config_file(tmp_path, "paper: x\n" + "#" * (2 << 20) + "\n", "big.yaml")
    with pytest.raises(ConfigError, match="is larger than 1,048,576 bytes"):
        load_config(big)


def test_free_text_fields_are_bounded(tmp_path):
    with pytest.raises(ConfigError, match=r"paper: is a heading: at most 500 characters, got 10,000,000"):
        config_from_dict({**GOOD, "paper": "p" * 10_000_000})
    with pytest.raises(ConfigError, match="experiment: names a directory: at most 128 characters, got 300"):
        config_from_dict({**GOOD, "experiment": "e" * 300})
    assert config_from_dict({**GOOD, "paper": "p" * 500})["paper"] == "p" * 500


# ------------------------------------------------------------------------------------------------ code that configs run
_MARKER_PLUGIN = """import pathlib
pathlib.Path(__file__).with_suffix(".ran").write_text("imported")
"""


def _with_plugin(run_dir, code, name="plugin.py"):
    plugin = run_dir.parent / name
    plugin.write_text(code)
    text = (run_dir / "config.yaml").read_text().replace("imports: []", f"imports: [{plugin}]")
    (run_dir / "config.yaml").write_text(text)
    return plugin


def test_report_and_evaluate_do_not_import_a_runs_plugins_unless_asked(finished, tmp_path, capsys):
    plugin = _with_plugin(finished, _MARKER_PLUGIN)
    ran = plugin.with_suffix(".ran")
    assert cli.main(["report", str(finished), "--out", str(tmp_path / "out")]) == 0
    assert cli.main(["evaluate", str(finished)]) == 0
    assert not ran.exists()  # read and scored without running the plugin's code
    assert "| 40.00 | 45.00 | 50.00 |" in capsys.readouterr().out
    assert cli.main(["report", str(finished), "--out", str(tmp_path / "out"), "--import-plugins"]) == 0
    assert ran.read_text() == "imported"


def test_evaluate_says_when_a_runs_dataset_needs_its_plugins(finished, capsys):
    _with_plugin(finished, "")
    text = (finished / "config.yaml").read_text().replace("name: digits", "name: plugin_digits")
    (finished / "config.yaml").write_text(text)
    assert cli.main(["evaluate", str(finished)]) == 1
    err = capsys.readouterr().err
    assert "dataset 'plugin_digits' is registered by this run's plugins" in err and "--import-plugins" in err
    assert "Traceback" not in err


def test_a_plugin_that_calls_sys_exit_is_reported_as_its_failure(tmp_path, capsys):
    from keras_okd.registry import PluginError, load_plugin

    plugin = tmp_path / "exits.py"
    plugin.write_text("import sys\n\nsys.exit(0)\n")
    with pytest.raises(PluginError, match=r"called sys.exit\(0\) at line 3 of .*exits.py while being imported: a "
                                          "plugin registers methods, models or datasets and must not end the process"):
        load_plugin(str(plugin))
    config = tmp_path / "c.yaml"
    config.write_text(dump_config(config_from_dict(GOOD)).replace("imports: []", "imports: [exits.py]"))
    assert cli.main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "imports.0: Plugin file 'exits.py'" in err and "called sys.exit(0)" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_cli_help_says_that_imports_run_code(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "so their code runs: train only configs you trust" in " ".join(capsys.readouterr().out.split())


# -------------------------------------------------------------------------------------- CLI errors, not tracebacks
@pytest.mark.heavy
def test_a_learning_rate_that_diverges_at_once_is_a_message(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    dump_config(config_from_dict({**GOOD, "epochs": 1}, ["optimizer.learning_rate=1.0e+300"]), path)
    assert cli.main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run"), "--verbose", "0"]) == 1
    err = capsys.readouterr().err
    assert "keras-okd train: " in err and "Non-finite loss at batch " in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "run" / "results.json")


def test_evaluate_with_results_json_holding_a_list(finished, capsys):
    (finished / "results.json").write_text("[1, 2]")
    assert cli.main(["evaluate", str(finished)]) == 1
    captured = capsys.readouterr()
    assert f"{finished / 'results.json'} holds a list, not the results of a run" in captured.err
    assert f"| {finished} | student_0 | " in captured.out and "Traceback" not in captured.err


def test_report_out_naming_an_existing_file(finished, tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    assert cli.main(["report", str(finished), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out} is a file, not a directory: pass --out DIR" in err and "Traceback" not in err
    assert out.read_text() == "mine"


@pytest.mark.parametrize("size", ["0", "-5"])
def test_evaluate_batch_size_below_one_is_refused(finished, capsys, size):
    with pytest.raises(SystemExit) as info:
        cli.main(["evaluate", str(finished), "--batch-size", size])
    assert info.value.code == 2
    assert f"--batch-size {size}: accepted: an integer >= 1" in capsys.readouterr().err
    assert not (finished / "evaluation.json").exists()
    with pytest.raises(ValueError, match="batch_size: got 0; accepted: an integer >= 1"):
        runner.evaluate_run(finished, batch_size=0)
