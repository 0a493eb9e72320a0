"""The `keras-okd` command line: the demo stays the default of `train`, in its dataset's recipe (fashion_mnist_1k by
default: configs/fashion_mnist_1k's; the digits' unchanged), options given overriding it; options of the two modes do
not mix; the demo's run directory holds one runner run per arm, which `evaluate` and `report` read."""

import csv
import json
import re
import shlex

import pytest
import yaml

from keras_okd import cli
from keras_okd.experiments import runner


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


#: The default demo's recipe: configs/fashion_mnist_1k's (README, ledger/n1000_plain).
CONVERGED = {"model": "simple_cnn_8", "epochs": 150, "warmup_epochs": 10, "batch_size": 64, "lr": 0.01,
             "lr_warmup_epochs": 5.0, "train_size": None, "schedule": "cosine", "validation_freq": 10}


def test_train_without_arguments_is_the_fashion_mnist_1k_demo(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "train_demo", lambda args: seen.setdefault("args", args) and 0)
    assert cli.main(["train"]) == 0
    args = seen["args"]
    assert (args.method, args.dataset, args.students, args.seed, args.run_dir, args.no_baseline, args.verbose) == (
        "tsb", "fashion_mnist_1k", 2, 0, None, False, 1)
    # the dataset-dependent options are not set by argparse: the dataset's recipe gives them
    assert (args.model, args.epochs, args.warmup_epochs, args.batch_size, args.lr, args.lr_warmup_epochs) == (
        None,) * 6
    assert cli._demo_recipe(args) == CONVERGED


@pytest.mark.parametrize("method", ["independent", "dml", "tsb"])
def test_the_default_demo_trains_the_recipe_of_configs_fashion_mnist_1k(method):
    from keras_okd.experiments import load_config

    demo = cli._demo_config(method, _demo_args())
    shipped = load_config(f"configs/fashion_mnist_1k/{method}.yaml")
    for key in ("method", "students", "dataset", "schedule", "epochs", "validation_freq", "strategy"):
        assert demo[key] == shipped[key], key
    assert {"nesterov": False, **demo["optimizer"]} == shipped["optimizer"]  # the config names Keras's default
    assert demo["seeds"] == [0] and demo["experiment"] == "fashion_mnist_1k_demo"


def test_the_digits_demo_keeps_its_recipe():
    digits = cli._demo_config("tsb", _demo_args("--dataset", "digits"))
    expected = {
        "method": {"name": "tsb", "params": {"temporal": True, "spatial": True, "beta": 0.8, "temperature": 4.0,
                                             "lambda_ta": 0.5, "lambda_si": 0.5, "warmup_epochs": 5,
                                             "bank_dtype": "float32"}},
        "students": ["simple_cnn", "simple_cnn"],
        "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"type": "step", "milestones": [25, 30, 35], "factor": 0.1, "warmup_epochs": 2.0},
        "epochs": 40, "validation_freq": 1,
    }
    assert {key: digits[key] for key in expected} == expected
    assert (digits["experiment"], digits["dataset"]["name"], digits["dataset"]["batch_size"]) == (
        "digits_demo", "digits", 64)
    assert "train_size" not in digits["dataset"] and digits["dataset"]["augment"] is None
    rate = runner.lr_schedule(digits, steps_per_epoch=4)
    assert [float(rate(4 * e)) for e in (24, 25, 30, 35)] == pytest.approx([0.05, 5e-3, 5e-4, 5e-5])


@pytest.mark.parametrize("dataset, default", [("fashion_mnist_1k", CONVERGED), ("digits", cli._STEP_RECIPE),
                                              ("fashion_mnist", {**cli._STEP_RECIPE, "train_size": 5000}),
                                              ("cifar10", cli._STEP_RECIPE)])
def test_explicit_demo_options_override_the_dataset_recipe(dataset, default):
    assert cli._demo_recipe(_demo_args("--dataset", dataset)) == default
    given = cli._demo_recipe(_demo_args("--dataset", dataset, "--model", "simple_cnn_16", "--epochs", "25",
                                        "--warmup-epochs", "3", "--batch-size", "32", "--lr", "0.2",
                                        "--lr-warmup-epochs", "0"))
    # a validation frequency that does not divide the epochs becomes their greatest common divisor
    assert given == {**default, "model": "simple_cnn_16", "epochs": 25, "warmup_epochs": 3, "batch_size": 32,
                     "lr": 0.2, "lr_warmup_epochs": 0.0, "validation_freq": 5 if dataset == "fashion_mnist_1k" else 1}


def test_the_help_names_each_dataset_default():
    text = " ".join(cli._parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    for line in ("training epochs (default: 150 on fashion_mnist_1k; 40 on digits and the others)",
                 "zoo name of the students (default: simple_cnn_8 on fashion_mnist_1k; simple_cnn on digits and the "
                 "others)", "epochs with KD weight 0 (default: 10 on fashion_mnist_1k; 5 on digits and the others)",
                 "initial SGD learning rate (default: 0.01 on fashion_mnist_1k; 0.05 on digits and the others)",
                 "(cosine on fashion_mnist_1k; step on digits and the others)", "batch size (default: 64)",
                 "the first E epochs, per step (default: 5 on fashion_mnist_1k; 2 on digits and the others; 0: none)",
                 "subset of N images (default: 5000 on fashion_mnist, mnist)"):
        assert line in text


def test_explicit_demo_options_reach_its_config():
    config = cli._demo_config("tsb", _demo_args("--epochs", "7", "--lr", "0.2", "--warmup-epochs", "2", "--model",
                                                "simple_cnn_16", "--lr-warmup-epochs", "1"))
    assert (config["epochs"], config["optimizer"]["learning_rate"], config["validation_freq"], config["students"],
            config["method"]["params"]["warmup_epochs"], config["schedule"]) == (
        7, 0.2, 1, ["simple_cnn_16"] * 2, 2, {"type": "cosine", "warmup_epochs": 1.0})


def test_the_demo_config_of_the_subset_datasets():
    fashion = cli._demo_config("dml", _demo_args("--dataset", "fashion_mnist", "--epochs", "2"))
    assert fashion["experiment"] == "fashion_mnist_demo"
    assert (fashion["dataset"]["name"], fashion["dataset"]["batch_size"], fashion["dataset"]["train_size"],
            fashion["dataset"]["data_dir"]) == ("fashion_mnist", 64, 5000, None)
    assert fashion["schedule"]["milestones"] == [1, 2]  # round(1.25), round(1.5) == round(1.75): one step each
    mnist = cli._demo_config("tsb", _demo_args("--dataset", "mnist", "--train-size", "300", "--data-dir", "/d"))
    assert (mnist["dataset"]["train_size"], mnist["dataset"]["data_dir"]) == (300, "/d")



@pytest.mark.parametrize("argv, message", [
    (["--dataset", "no_such"], "--dataset 'no_such' is not a registered dataset; known: cifar10, cifar100, digits"),
    (["--train-size", "100"], "--train-size: dataset 'fashion_mnist_1k' has no train_size option (datasets with "
                              "one: fashion_mnist, mnist)"),
    (["--dataset", "fashion_mnist", "--train-size", "0"], "--train-size 0: accepted: an integer >= 1"),
    (["--data-dir", "/x"], "--data-dir: dataset 'fashion_mnist_1k' has no data_dir option"),
    (["--dataset", "digits", "--data-dir", "/x"], "--data-dir: dataset 'digits' has no data_dir option"),
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


def test_the_conclusion_of_the_default_demo_points_at_its_five_seed_comparison():
    args = _demo_args("--method", "dml", "--epochs", "30")
    text = cli._conclusion(args, "runs/x")
    flat = " ".join(text.split())
    assert "one seed is one sample" in flat and "saturated" not in flat
    assert "the README's ledger table found TSB (and DML, by less) ahead of independent training over 5 seeds" in flat
    assert "`keras-okd report ledger/n1000_plain`" in flat
    assert not re.search(r"\d\.\d", text)  # no figure: the measured ones are in the README, with their commands
    for m in ("independent", "dml", "tsb"):
        assert f"  keras-okd train --config configs/fashion_mnist_1k/{m}.yaml" in text.splitlines()
    assert "  keras-okd report runs/fashion_mnist_1k_simple_cnn_8" in text.splitlines()
    loop = next(line for line in text.splitlines() if line.strip().startswith("for S in"))
    command = loop.split("; do ", 1)[1].split("; done")[0].replace("$S", "2")
    seeded = cli._parser().parse_args(shlex.split(command)[1:])  # the printed command parses, with the same options
    assert (seeded.dataset, seeded.method, seeded.epochs, seeded.lr, seeded.seed, seeded.run_dir) == (
        "fashion_mnist_1k", "dml", 30, None, 2, "runs/x-seeds/seed_2")
    assert "keras-okd report runs/x runs/x-seeds" in text


@pytest.mark.heavy
def test_the_default_demo_trains_fashion_mnist_1k_and_says_when_the_kd_warmup_fills_the_run(tmp_path, capsys,
                                                                                               caplog):
    run_dir = tmp_path / "demo"
    with caplog.at_level("WARNING", logger="keras_okd"):
        assert cli.main(["train", "--epochs", "1", "--batch-size", "500", "--no-baseline", "--run-dir", str(run_dir),
                         "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    # TSB's KD warm-up (10 epochs by default) covers the whole 1-epoch run: fit says the students train independently
    assert "weight 0 in all 1 epochs of this fit" in caplog.text and "--warmup-epochs" in caplog.text
    assert "one seed is one sample" in out and "keras-okd report ledger/n1000_plain" in out
    assert "fashion_mnist_1k (1000 training images)" in out and "Training time: tsb " in out
    config = yaml.safe_load((run_dir / "tsb" / runner.CONFIG).read_text())
    assert (config["students"], config["dataset"]["name"], config["method"]["params"]["warmup_epochs"],
            config["schedule"], config["validation_freq"]) == (
        ["simple_cnn_8"] * 2, "fashion_mnist_1k", 10, {"type": "cosine", "warmup_epochs": 5.0}, 1)
    summary = json.loads((run_dir / "results.json").read_text())
    assert (summary["model"], summary["epochs"], summary["num_train_samples"]) == ("simple_cnn_8", 1, 1000)


@pytest.mark.heavy
def test_the_demo_writes_runner_runs_that_evaluate_and_report_read(tmp_path, capsys):
    run_dir = tmp_path / "demo"
    assert cli.main(["train", "--dataset", "digits", "--model", "simple_cnn_8", "--epochs", "2", "--warmup-epochs", "1",
                     "--batch-size", "256", "--run-dir", str(run_dir), "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert "the bundled digits are saturated" in out and "one seed cannot show a gain or a loss" in out
    assert "keras-okd train --dataset fashion_mnist --model simple_cnn_8 --epochs 2" in out
    for line in ("keras-okd train --config configs/fashion_mnist/independent.yaml",
                 "keras-okd train --config configs/fashion_mnist/dml.yaml",
                 "keras-okd train --config configs/fashion_mnist/tsb.yaml",
                 "keras-okd report runs/fashion_mnist_simple_cnn",
                 *(f"keras-okd train --config configs/fashion_mnist_1k/{m}.yaml" for m in ("independent", "tsb")),
                 "keras-okd report runs/fashion_mnist_1k_simple_cnn_8",
                 "Training time: tsb "):
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
    # a finished demo is not retrained
    assert cli.main(["train", "--dataset", "digits", "--model", "simple_cnn_8", "--epochs", "2", "--warmup-epochs", "1",
                     "--batch-size", "256", "--run-dir", str(run_dir), "--verbose", "0"]) == 0
    assert capsys.readouterr().out.count("already complete") == 2
    assert cli.main(["evaluate", str(run_dir)]) == 0
    assert str(run_dir / "independent") in capsys.readouterr().out
    assert cli.main(["report", str(run_dir)]) == 0
    report = capsys.readouterr().out
    assert "| independent |" in report and "n=1, no interval" in report


def test_ctrl_c_in_the_demo_names_the_command_that_resumes_it(tmp_path, capsys, monkeypatch):
    import keras_okd.experiments

    def interrupted(config, run_dir, seed, verbose=1, backup_every=0.0):
        assert backup_every == 60.0  # the CLI's default: a backup once a minute of training
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(keras_okd.experiments, "run_experiment", interrupted)
    assert cli.main(["train", "--method", "dml", "--epochs", "3", "--verbose", "0"]) == 130
    err = capsys.readouterr().err
    # the default directory has the time in its name: the command to resume names it
    assert "rerun `keras-okd train --method dml --epochs 3 --run-dir runs/dml-fashion_mnist_1k-" in err
    assert "` to resume it from there" in err and "Traceback" not in err
    assert "keeps its training up to its last backup (every 60 s)" in err


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
