"""The `keras-okd` command line: the demo stays the default of `train`; options of the two modes do not mix."""

import pytest

from keras_okd import cli


def test_train_without_arguments_is_the_digits_demo(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "train_digits", lambda args: seen.setdefault("args", args) and 0)
    assert cli.main(["train"]) == 0
    args = seen["args"]
    assert (args.method, args.students, args.model, args.epochs, args.warmup_epochs, args.batch_size, args.lr,
            args.seed, args.run_dir, args.no_baseline, args.verbose) == (
        "tsb", 2, "simple_cnn", 40, None, 64, 0.05, 0, None, False, 1)  # warm-up None: 5 for methods that take one


def test_config_mode_refuses_demo_options(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--config", str(tmp_path / "x.yaml"), "--epochs", "3"])
    assert "--epochs only apply to the digits demo" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--set", "epochs=3"])
    assert "--set needs --config" in capsys.readouterr().err


def test_config_errors_print_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("experiment: x\nepochz: 3\n")
    assert cli.main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: epochz: unknown key" in err and "Traceback" not in err
    assert cli.main(["evaluate", str(tmp_path)]) == 2
