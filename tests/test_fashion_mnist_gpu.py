"""benchmarks/fashion_mnist_gpu.py: its numpy batches against the pipeline's semantics (an independent per-image
computation), its plan and override checks, and one driver call on a tiny synthetic Fashion-MNIST whose run
directories `make_report` reads; on JAX and torch the driver and its workers run with TensorFlow blocked."""

import json
import os
import runpy
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_okd.data import mnist_family, write_idx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "fashion_mnist_gpu.py")
SCRIPT_NAME = "benchmarks/fashion_mnist_gpu.py"
gpu = runpy.run_path(SCRIPT)  # the script's functions, without running main

#: results.json keys that keras_okd.experiments.runner writes for a run of list students.
RUNNER_KEYS = {"experiment", "paper", "method", "seed", "backend", "keras_version", "epochs", "num_train_samples",
               "num_classes", "seconds", "session_seconds", "net_accuracy", "ensemble_accuracy", "final", "models",
               "ensemble", "deploy"}


def synthetic_fashion_mnist(folder, n_train=400, n_test=100, seed=0):
    """The four IDX files of a small Fashion-MNIST look-alike: random 28x28 images, labels 0..9 in turn."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), (np.arange(n) % 10).astype(np.uint8))
    return folder


def test_pad_crop_flip_matches_a_per_image_computation():
    images = np.random.default_rng(1).random((16, 6, 5, 2)).astype("float32")
    out = gpu["pad_crop_flip"](images, np.random.default_rng(7), 2, True)
    rng = np.random.default_rng(7)  # the same draws, in the same order
    dy, dx, flips = rng.integers(0, 5, 16), rng.integers(0, 5, 16), rng.random(16) < 0.5
    for b in range(16):
        padded = np.pad(images[b], ((2, 2), (2, 2), (0, 0)))
        window = padded[dy[b]:dy[b] + 6, dx[b]:dx[b] + 5]
        np.testing.assert_array_equal(out[b], window[:, ::-1] if flips[b] else window)
    assert 0 < flips.sum() < 16 and len(set(zip(dy, dx))) > 1  # the draws vary per image
    unflipped = gpu["pad_crop_flip"](images, np.random.default_rng(7), 2, False)
    np.testing.assert_array_equal(unflipped[~flips], out[~flips])  # same windows, no flip


def test_batches_follow_the_pipeline_semantics():
    x = np.arange(10 * 28 * 28, dtype="float32").reshape(10, 28, 28, 1)
    y = np.arange(10, dtype="int32")
    batches = gpu["make_batches"](x, y, 4, seed=3, padding=0, flip=False)
    assert len(batches) == 3  # the last batch is short, as tf.data's batch keeps it

    def epoch(e):
        batches.set_epoch(e)
        return [batches[k] for k in range(len(batches))]

    first = epoch(0)
    index = np.concatenate([inputs["index"] for inputs, _ in first])
    assert sorted(index.tolist()) == list(range(10)) and [len(b[1]) for b in first] == [4, 4, 2]
    for inputs, labels in first:  # each sample keeps its position as its index, with its own image and label
        np.testing.assert_array_equal(inputs["inputs"], x[inputs["index"]])
        np.testing.assert_array_equal(labels, y[inputs["index"]])
    again = epoch(0)
    assert all(np.array_equal(a[0]["index"], b[0]["index"]) for a, b in zip(first, again))
    assert not np.array_equal(index, np.concatenate([inputs["index"] for inputs, _ in epoch(1)]))
    fixed = gpu["make_batches"](x, y, 4, seed=3, shuffle=False)
    assert np.concatenate([fixed[k][0]["index"] for k in range(3)]).tolist() == list(range(10))

    augmented = gpu["make_batches"](x, y, 4, seed=3, padding=2, flip=True)
    augmented.set_epoch(2)
    inputs, _ = augmented[1]
    expected = gpu["pad_crop_flip"](x[inputs["index"]], np.random.default_rng([3, 2, 1]), 2, True)
    np.testing.assert_array_equal(inputs["inputs"], expected)  # step s of epoch e draws from (seed, e, s)


def test_standard_augmentation_is_the_loaders():
    assert mnist_family.augmentation("fashion_mnist", "standard") == (2, True)
    assert mnist_family.augmentation("mnist", "standard") == (2, False)
    assert mnist_family.augmentation("fashion_mnist", None) == (0, False)
    with pytest.raises(ValueError, match="augment must be one of"):
        mnist_family.augmentation("fashion_mnist", "rotate")


def test_bad_override_and_plan_stop_before_any_job(tmp_path):
    with pytest.raises(SystemExit, match="learning_rat"):
        gpu["main"]([os.path.join(ROOT, "configs/fashion_mnist/dml.yaml"), "--set", "optimizer.learning_rat=0.1",
                     "--out", str(tmp_path / "out"), "--dry-run"])
    plan = tmp_path / "plan.yaml"
    plan.write_text("- configs: [configs/fashion_mnist/dml.yaml]\n  seeds: [0]\n")
    with pytest.raises(SystemExit, match="needs `configs`.*and `tag`"):
        gpu["main"](["--plan", str(plan), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    plan.write_text("- {configs: [configs/fashion_mnist/dml.yaml, configs/fashion_mnist/tsb.yaml], seeds: [0, 1], "
                    "tag: a, set: [epochs=3]}\n- {configs: [configs/fashion_mnist/dml.yaml], seeds: [0], tag: b}\n")
    jobs = gpu["main"](["--plan", str(plan), "--out", str(tmp_path / "out"), "--dry-run"])
    assert [(j.tag, os.path.basename(j.config), j.seed) for j in jobs] == [  # entry by entry, seed-major
        ("a", "dml.yaml", 0), ("a", "tsb.yaml", 0), ("a", "dml.yaml", 1), ("a", "tsb.yaml", 1), ("b", "dml.yaml", 0)]
    assert jobs[0].run_dir == str(tmp_path / "out" / "a" / "fashion_mnist_simple_cnn" / "dml" / "seed_0")


@pytest.mark.heavy
def test_driver_writes_runs_that_report_reads(tmp_path):
    data = synthetic_fashion_mnist(str(tmp_path / "data"))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    blocked = keras.backend.backend() != "tensorflow"
    if blocked:  # driver and workers (which inherit PYTHONPATH) run with `import tensorflow` failing
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "sitecustomize.py").write_text("import sys\nsys.modules['tensorflow'] = None\n")
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), env["PYTHONPATH"]])
        probe = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr  # the block holds
    command = [sys.executable, SCRIPT, "configs/fashion_mnist/independent.yaml", "configs/fashion_mnist/tsb.yaml",
               "--seeds", "0", "--set", "dataset.train_size=256", "--set", "epochs=1", "--tag", "tiny",
               "--data-dir", data, "--out", str(out), "--parallel", "2", "--time-budget", "600",
               "--ledger", str(tmp_path / "ledger")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "done 2; failed 0" in done.stdout, done.stdout[-3000:]
    from keras_okd.experiments import ledger

    records = ledger.find_records([tmp_path / "ledger" / "tiny"])
    assert len(records) == 2 and all(ledger.read_record(p)["produced_by"] == SCRIPT_NAME for p in records)
    # another machine with the ledger but not the run directories: nothing is trained again
    again = subprocess.run([*command[:command.index("--out") + 1], str(tmp_path / "elsewhere"),
                            *command[command.index("--out") + 2:]], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0 and "done 0; failed 0; skipped 0; stopped 0; reused 2" in again.stdout, \
        again.stdout[-3000:] + again.stderr[-3000:]
    # a record trains again to the same accuracies on its backend
    rerun = subprocess.run([sys.executable, SCRIPT, "--rerun", records[0], "--data-dir", data], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0 and "reproduced within 0.0 points" in rerun.stdout, \
        rerun.stdout[-3000:] + rerun.stderr[-3000:]

    from keras_okd.experiments import load_config
    from keras_okd.experiments.report import make_report
    from keras_okd.experiments.runner import read_history

    (x, y), _ = mnist_family.arrays("fashion_mnist", data, train_size=256)
    for method in ("independent", "tsb"):
        run = out / "tiny" / "fashion_mnist_simple_cnn" / method / "seed_0"
        results = json.loads((run / "results.json").read_text())
        assert RUNNER_KEYS <= set(results)
        assert results["produced_by"] == "benchmarks/fashion_mnist_gpu.py"
        assert results["backend"] == keras.backend.backend() and results["num_train_samples"] == len(y) == 256
        assert results["overrides"] == ["dataset.train_size=256", "epochs=1"] and results["epochs"] == 1
        config = load_config(run / "config.yaml")
        assert config["dataset"]["train_size"] == 256 and config["epochs"] == 1 and config["seeds"] == [0]
        history = read_history(run / "history.csv")
        assert len(history) == 1 and history[0]["val_student_0_accuracy"] == results["net_accuracy"][0]
        assert sorted(os.listdir(run)) == sorted(["config.yaml", "history.csv", "progress.json", "results.json",
                                                  "train.log", "student_0.keras", "student_1.keras",
                                                  "ensemble.keras"])
    report = make_report([out / "tiny"], tmp_path / "report")
    assert report["runs"] == 2 and "| independent |" in report["table"] and "| tsb" in report["table"]
    summary = (out / "tiny" / "summary.md").read_text()
    assert "2 complete runs" in summary and "| independent |" in summary


def fake_worker(job, args):
    """A stand-in worker command: `fail` exits 1, `sleep_<s>` sleeps s seconds then writes a results.json."""
    kind = os.path.basename(job.config)
    if kind == "fail":
        return [sys.executable, "-c", "raise SystemExit('bad job')"]
    seconds = float(kind.split("_")[1])
    results = json.dumps({"net_accuracy": [0.5, 0.5], "ensemble_accuracy": 0.5})
    return [sys.executable, "-c", f"import time; time.sleep({seconds}); "
            f"open({os.path.join(job.run_dir, 'results.json')!r}, 'w').write({results!r})"]


def fake_jobs(out, *kinds):
    return [gpu["Job"]("t", kind, [], seed, os.path.join(out, "t", "exp", kind, f"seed_{seed}"), f"t/{kind}")
            for kind, seed in kinds]


def test_driver_budget_failures_and_stops(tmp_path, monkeypatch):
    import argparse

    monkeypatch.setitem(gpu["drive"].__globals__, "worker_command", fake_worker)
    out = str(tmp_path / "out")
    args = argparse.Namespace(out=out, parallel=1, time_budget=6.0)
    # the failure is logged and moved aside; sleep_3 seed 1 cannot finish in what seed 0 left (< 3 s of 6): skipped
    outcome = gpu["drive"](fake_jobs(out, ("fail", 0), ("sleep_3", 0), ("sleep_3", 1)), args, say=lambda m: None)
    assert [repr(j) for j in outcome["failed"]] == ["t/fail seed 0"]
    assert [repr(j) for j in outcome["done"]] == ["t/sleep_3 seed 0"]
    assert [repr(j) for j in outcome["skipped"]] == ["t/sleep_3 seed 1"]
    assert os.path.exists(os.path.join(out, "t", ".failed", "exp", "fail", "seed_0", "train.log"))
    assert "bad job" in open(os.path.join(out, "t", ".failed", "exp", "fail", "seed_0", "train.log")).read()
    assert not os.path.exists(os.path.join(out, "t", "exp", "fail"))
    # a complete run is reused, not run again; a job still running when the budget is spent is stopped, moved aside
    args.time_budget, start = 2.0, gpu["time"].time()
    outcome = gpu["drive"](fake_jobs(out, ("sleep_3", 0), ("sleep_60", 0)), args, say=lambda m: None)
    assert [repr(j) for j in outcome["reused"]] == ["t/sleep_3 seed 0"]
    assert [repr(j) for j in outcome["stopped"]] == ["t/sleep_60 seed 0"]
    assert gpu["time"].time() - start < 30
    assert os.path.isdir(os.path.join(out, "t", ".stopped", "exp", "sleep_60", "seed_0"))
    assert not os.path.exists(os.path.join(out, "t", "exp", "sleep_60"))


def test_estimates_scale_with_work():
    job = gpu["Job"]("b", "configs/x/tsb.yaml", [], 0, "d", "b/tsb.yaml", work=3000)
    assert gpu["estimate_for"](job, {}) is None
    assert gpu["estimate_for"](job, {"a/tsb.yaml": (10.0, 1000)}) == 30.0  # same file, 3x the epochs x images
    assert gpu["estimate_for"](job, {"a/tsb.yaml": (10.0, 6000)}) == 10.0  # never below a measured run
    assert gpu["estimate_for"](job, {"a/dml.yaml": (10.0, 1000)}) is None
    assert gpu["estimate_for"](job, {"b/tsb.yaml": (7.0, 1000), "a/tsb.yaml": (10.0, 1000)}) == 7.0


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="Keras's TensorFlow backend imports TensorFlow")
def test_data_configs_and_runner_import_without_tensorflow():
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import keras_okd.data, keras_okd.data.idx, keras_okd.data.mnist_family, keras_okd.experiments.runner\n"
        "from keras_okd.experiments.config import load_config\n"
        "config = load_config('configs/fashion_mnist/dkel.yaml')\n"
        "layer = keras_okd.data.peer_views(28, 28, padding=2)\n"
        "print(config['dataset']['train_size'], type(layer).__name__, 'tensorflow' in keras_okd.data.names())\n"
        "keras_okd.data.pipeline\n"  # a tf.data name: resolving it must now fail, naming TensorFlow
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.stdout.split() == ["20000", "RandomShiftFlip", "False"], done.stdout + done.stderr[-2000:]
    assert done.returncode != 0 and "import of tensorflow halted" in done.stderr


def test_lazy_data_names_are_the_modules_own():
    import keras_okd.data
    from keras_okd.data import augment, indexing, views

    assert keras_okd.data.pipeline is indexing.pipeline and keras_okd.data.PadCropFlip is augment.PadCropFlip
    assert augment.RandomShiftFlip is views.RandomShiftFlip is keras_okd.data.RandomShiftFlip
    assert {"pipeline", "PadCropFlip", "augment"} <= set(dir(keras_okd.data))
    with pytest.raises(AttributeError, match="no attribute 'pipelines'"):
        keras_okd.data.pipelines
