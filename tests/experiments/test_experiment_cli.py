"""The `keras-okd` command line: the demo stays the default of `train`; options of the two modes do not mix; the demo's
run directory holds one runner run per arm, which `evaluate` and `report` read."""

import csv
import json
import shlex

import pytest
import yaml

from keras_okd import cli
from keras_okd.experiments import runner


def test_train_without_arguments_is_the_digits_demo(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "train_demo", lambda args: seen.setdefault("args", args) and 0)
    assert cli.main(["train"]) == 0
    args = seen["args"]
    assert (args.method, args.students, args.model, args.epochs, args.warmup_epochs, args.batch_size, args.lr,
            args.seed, args.run_dir, args.no_baseline, args.verbose) == (
        "tsb", 2, "simple_cnn", 40, None, 64, 0.05, 0, None, False, 1)  # warm-up None: 5 for methods that take one


def test_config_mode_refuses_demo_options(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--config", str(tmp_path / "x.yaml"), "--epochs", "3"])
    assert "--epochs only apply to the demo" in capsys.readouterr().err
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


def _demo_args(*argv):
    args = cli._parser().parse_args(["train", *argv])
    args.seed = 0 if args.seed is None else args.seed
    return args


def test_the_demo_config_per_dataset():
    digits = cli._demo_config("tsb", _demo_args("--epochs", "40"))
    assert digits["experiment"] == "digits_demo" and "train_size" not in digits["dataset"]
    assert digits["schedule"] == {"type": "step", "milestones": [25, 30, 35], "factor": 0.1,
                                  "warmup_epochs": digits["schedule"]["warmup_epochs"]}
    rate = runner.lr_schedule(digits, steps_per_epoch=4)
    assert [float(rate(4 * e)) for e in (24, 25, 30, 35)] == pytest.approx([0.05, 5e-3, 5e-4, 5e-5])
    fashion = cli._demo_config("dml", _demo_args("--dataset", "fashion_mnist", "--epochs", "2"))
    assert fashion["experiment"] == "fashion_mnist_demo"
    assert (fashion["dataset"]["name"], fashion["dataset"]["batch_size"], fashion["dataset"]["train_size"],
            fashion["dataset"]["data_dir"]) == ("fashion_mnist", 64, 5000, None)
    assert fashion["schedule"]["milestones"] == [1, 2]  # round(1.25), round(1.5) == round(1.75): one step each
    mnist = cli._demo_config("tsb", _demo_args("--dataset", "mnist", "--train-size", "300", "--data-dir", "/d"))
    assert (mnist["dataset"]["train_size"], mnist["dataset"]["data_dir"]) == (300, "/d")


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "no_such"], "--dataset 'no_such' is not a registered dataset; known: cifar10, cifar100, digits"),
    (["--train-size", "100"], "--train-size: dataset 'digits' has no train_size option (datasets with one: "
                              "fashion_mnist, mnist)"),
    (["--dataset", "fashion_mnist", "--train-size", "0"], "--train-size 0: accepted: an integer >= 1"),
    (["--data-dir", "/x"], "--data-dir: dataset 'digits' has no data_dir option"),
])
def test_demo_dataset_options_out_of_range_exit_2(capsys, tmp_path, argv, message):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", *argv, "--run-dir", str(tmp_path / "run")])
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit):
        cli.main(["train", "--config", str(tmp_path / "x.yaml"), "--dataset", "mnist"])
    assert "--dataset only apply to the demo" in capsys.readouterr().err


def test_demo_on_a_dataset_not_on_disk_is_a_message(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--dataset", "fashion_mnist", "--data-dir", str(empty), "--run-dir", str(run_dir),
                     "--verbose", "0"]) == cli.EXIT_NO_DATA == 3
    err = capsys.readouterr().err
    assert f"keras-okd train: Fashion-MNIST not found in data_dir={str(empty)!r}" in err
    assert "apt-get install dataset-fashion-mnist" in err and "Traceback" not in err
    assert f"pass `--data-dir {empty}`." in err and "pass `data_dir=" not in err  # the advice in the demo's flags
    assert not run_dir.exists()  # the demo made it: nothing is left behind


def test_config_run_on_a_dataset_not_on_disk_advises_set_and_leaves_nothing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    run_dir = tmp_path / "run"
    argv = ["train", "--config", "configs/fashion_mnist/independent.yaml", "--set", f"dataset.data_dir={empty}",
            "--seed", "0", "--run-dir", str(run_dir), "--verbose", "0"]
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert f"pass `--set dataset.data_dir={empty}`." in err and "Traceback" not in err
    assert not run_dir.exists()  # no run.lock (nor an empty directory) from a run that never started
    run_dir.mkdir()  # a directory the user made stays, without a lock
    assert cli.main(argv) == 3 and sorted(p.name for p in run_dir.iterdir()) == []


def test_the_conclusion_off_the_digits_points_at_several_seeds():
    args = _demo_args("--dataset", "fashion_mnist", "--method", "dml", "--epochs", "3")
    text = cli._conclusion(args, "runs/x")
    assert "one seed is one sample" in text and "saturated" not in text
    assert "keras-okd train --config configs/fashion_mnist/dml.yaml" in text
    loop = next(line for line in text.splitlines() if line.strip().startswith("for S in"))
    command = loop.split("; do ", 1)[1].split("; done")[0].replace("$S", "3")
    seeded = cli._parser().parse_args(shlex.split(command)[1:])  # the printed command parses, with the same options
    assert (seeded.dataset, seeded.method, seeded.epochs, seeded.seed, seeded.run_dir) == (
        "fashion_mnist", "dml", 3, 3, "runs/x-seeds/seed_3")
    assert "keras-okd report runs/x runs/x-seeds" in text


@pytest.mark.heavy
def test_the_demo_writes_runner_runs_that_evaluate_and_report_read(tmp_path, capsys):
    run_dir = tmp_path / "demo"
    assert cli.main(["train", "--model", "simple_cnn_8", "--epochs", "2", "--warmup-epochs", "1", "--batch-size",
                     "256", "--run-dir", str(run_dir), "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert "the bundled digits are saturated" in out and "one seed cannot show a gain or a loss" in out
    assert "keras-okd train --dataset fashion_mnist --model simple_cnn_8 --epochs 2" in out
    for line in ("keras-okd train --config configs/fashion_mnist/independent.yaml",
                 "keras-okd train --config configs/fashion_mnist/dml.yaml",
                 "keras-okd train --config configs/fashion_mnist/tsb.yaml",
                 "keras-okd report runs/fashion_mnist_simple_cnn"):
        assert line in out
    summary = json.loads((run_dir / "results.json").read_text())
    assert summary["runs"] == {"tsb": str(run_dir / "tsb"), "independent": str(run_dir / "independent")}
    for arm in ("tsb", "independent"):
        config = yaml.safe_load((run_dir / arm / runner.CONFIG).read_text())
        assert config["method"]["name"] == arm and config["schedule"]["milestones"] == [1, 2]
        results = json.loads((run_dir / arm / runner.RESULTS).read_text())
        with open(run_dir / arm / runner.HISTORY) as f:
            last = list(csv.DictReader(f))[-1]
        assert results["epochs"] == 2
        assert [summary["test_accuracy"][row][arm] for row in ("student_0", "student_1", "ensemble")] == [
            pytest.approx(float(last[k])) for k in
            ("val_student_0_accuracy", "val_student_1_accuracy", "val_ensemble_accuracy")]
    assert "| student_0 | " in (run_dir / "results.md").read_text()
    assert cli.main(["train", "--model", "simple_cnn_8", "--epochs", "2", "--warmup-epochs", "1", "--batch-size",
                     "256", "--run-dir", str(run_dir), "--verbose", "0"]) == 0  # a finished demo is not retrained
    assert capsys.readouterr().out.count("already complete") == 2
    assert cli.main(["evaluate", str(run_dir)]) == 0
    assert str(run_dir / "independent") in capsys.readouterr().out
    assert cli.main(["report", str(run_dir)]) == 0
    report = capsys.readouterr().out
    assert "| independent |" in report and "n=1, no interval" in report


def test_ctrl_c_in_the_demo_names_the_command_that_resumes_it(tmp_path, capsys, monkeypatch):
    import keras_okd.experiments

    def interrupted(config, run_dir, seed, verbose=1):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(keras_okd.experiments, "run_experiment", interrupted)
    assert cli.main(["train", "--method", "dml", "--epochs", "3", "--verbose", "0"]) == 130
    err = capsys.readouterr().err
    # the default directory has the time in its name: the command to resume names it
    assert "rerun `keras-okd train --method dml --epochs 3 --run-dir runs/dml-digits-" in err
    assert "` to resume it from there" in err and "Traceback" not in err


def test_version_and_the_exit_statuses(capsys, monkeypatch):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"keras-okd {version('keras-okd')} (keras {version('keras')})"
    with pytest.raises(SystemExit) as info:  # usage: argparse's own status
        cli.main(["train", "--epochs", "0"])
    assert info.value.code == cli.EXIT_USAGE == 2

    def broken_install(args):
        raise ModuleNotFoundError("tensorflow-datasets needs the module 'importlib_resources'", name="x")

    monkeypatch.setattr(cli, "train_demo", broken_install)
    assert cli.main(["train"]) == cli.EXIT_FAILURE == 1
    err = capsys.readouterr().err
    assert "keras-okd train: tensorflow-datasets needs the module 'importlib_resources'" in err
    assert "Traceback" not in err
    usage = cli._parser().format_help()
    assert "exit status: 0 done, 1 a failure while running, 2 a usage error, 3 the dataset" in usage
