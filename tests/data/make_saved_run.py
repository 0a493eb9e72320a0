"""Write `tests/data/saved_run/`: a tiny run saved by the code as it is, so that later code is checked against it.

`tests/test_saved_run.py` loads what this writes and expects the same predictions, so every refactor of the distiller,
the parts, the presets or the zoo is checked against checkpoints written before it. Rerun this only when a change
means to break old files (and say so in its commit); otherwise the files stay as an older version wrote them.

What it writes (about 600 KB, most of it HDF5 overhead; 170 KB compressed), from three epochs of `tsb` (temporal
accumulator + spatial integrator) with two `simple_cnn_8` students on 400 of scikit-learn's bundled digits:

    run/              the finished run directory of `keras_okd.experiments.run_experiment` (config.yaml, history.csv,
                      results.json, student_{i}.keras, ensemble.keras), TensorBoard logs left out
    backup/           the run's last `RunCheckpoint` backup (epoch_00003.weights.h5 and its record), copied
                      before the run removed it: the whole distiller's variables, bank and schedules included
    distiller.keras   the whole distiller, `OnlineDistiller.save`
    expected.npz      inputs `x` (16 validation images) and what the saved files computed on them: `student_{i}`
                      (logits), `ensemble` and `distiller` (probabilities), the bank and counts of the accumulator

Usage (from the repository root; any backend, the files are backend-neutral):

    KERAS_BACKEND=jax python tests/data/make_saved_run.py
"""

import os
import pathlib
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "saved_run"
CONFIG = ROOT / "configs" / "digits" / "tsb.yaml"
# 400 training images (the rest validates), three epochs, narrow students: seconds, and small files.
TRAIN, VALIDATION = 400, 1397
OVERRIDES = ["epochs=3", "seeds=[0]", "students=[simple_cnn_8, simple_cnn_8]", f"dataset.validation_size={VALIDATION}",
             "dataset.batch_size=50", "method.params.warmup_epochs=0"]
SEED = 0


class KeepBackup(keras.callbacks.Callback):
    """Copies the run's newest backup at the end of every epoch (the runner removes its backups once the run is done)."""

    def __init__(self, backup_dir, into):
        super().__init__()
        self.backup_dir, self.into = pathlib.Path(backup_dir), pathlib.Path(into)

    def on_epoch_end(self, epoch, logs=None):  # runs after RunCheckpoint's, which wrote backup `epoch + 1`
        shutil.rmtree(self.into, ignore_errors=True)
        self.into.mkdir()
        for path in self.backup_dir.glob(f"epoch_{epoch + 1:05d}.*"):
            shutil.copy2(path, self.into / path.name)


def main():
    sys.path.insert(0, str(ROOT))
    import keras_okd
    from keras_okd.experiments import load_config, run_experiment
    from keras_okd.experiments.runner import BACKUP

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    run_dir = OUT / "run"
    config = load_config(CONFIG, OVERRIDES)
    keep = KeepBackup(str(run_dir / BACKUP), str(OUT / "backup"))
    results = run_experiment(config, str(run_dir), SEED, callbacks=[keep], verbose=0)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    for leftover in ("run.lock", "progress.json"):
        if (run_dir / leftover).exists():
            (run_dir / leftover).unlink()

    # The distiller, rebuilt from the run's config and restored from its backup, as a resume would.
    (_, _), (x_val, _) = keras_okd.data.digits_arrays(validation_size=VALIDATION, seed=0)
    x = x_val[:16]
    distiller = restored_distiller(run_dir, OUT / "backup")
    distiller.save(OUT / "distiller.keras")
    expected = {"x": x, "distiller": distiller.predict(x, verbose=0),
                "bank": keras.ops.convert_to_numpy(distiller.knowledge[0].bank),
                "counts": keras.ops.convert_to_numpy(distiller.knowledge[0].counts)}
    for name in results["models"] + ["ensemble.keras"]:
        model = keras.saving.load_model(run_dir / name)
        expected[name.removesuffix(".keras")] = keras.ops.convert_to_numpy(model(x, training=False))
    np.savez_compressed(OUT / "expected.npz", **expected)
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT.relative_to(ROOT)} ({size:,} bytes) with keras {keras.__version__} on "
          f"{keras.backend.backend()}")


def restored_distiller(run_dir, backup_dir):
    """The distiller of `run_dir/config.yaml`, built and restored from `backup_dir` as `RunCheckpoint` does."""
    from keras_okd.experiments import load_config
    from keras_okd.experiments.runner import build_distiller
    from keras_okd.experiments.state import RunCheckpoint

    config = load_config(run_dir / "config.yaml", check_params=False)
    distiller, _ = build_distiller(config, TRAIN, 10, (8, 8, 1))
    distiller(np.zeros((1, 8, 8, 1), "float32"))
    checkpoint = RunCheckpoint(str(backup_dir), verbose=0)
    checkpoint.set_model(distiller)
    checkpoint.on_train_begin()
    if checkpoint.restored is None:
        raise RuntimeError(f"{backup_dir}: no backup was restored ({checkpoint.problems})")
    return distiller


if __name__ == "__main__":
    main()
