"""What a run's backups cost beside its epochs: `run_experiment` of a config with a backup after every epoch, every
`RunCheckpoint.save` clocked (`save_weights` of every variable, the SHA-256, the record, both fsynced and renamed).

Prints the median and range of the seconds per backup, the median seconds per epoch (the epochs' own time, backups
excluded: `RunCheckpoint`'s `seconds`), their ratio, and what `--backup-every` (the CLI's default: 60 s) leaves of
it. The default config is the demo's regime (configs/fashion_mnist_1k/tsb.yaml: two simple_cnn_8, 1,000 images,
16 steps per epoch), 20 epochs.

    KERAS_BACKEND=tensorflow python benchmarks/bench_backup.py --epochs 20
"""

import argparse
import os
import statistics
import tempfile
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/fashion_mnist_1k/tsb.yaml")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--every", type=float, default=60.0, help="the --backup-every to compare with (seconds)")
    args = parser.parse_args(argv)

    import keras

    from keras_okd.experiments import load_config, run_experiment
    from keras_okd.experiments.state import RunCheckpoint

    clocked, save = [], RunCheckpoint.save

    def timed_save(self, epoch):
        start = time.perf_counter()
        save(self, epoch)
        clocked.append(time.perf_counter() - start)

    RunCheckpoint.save = timed_save
    config = load_config(args.config, [f"epochs={args.epochs}", f"validation_freq={args.epochs}"])
    with tempfile.TemporaryDirectory() as run_dir:
        results = run_experiment(config, os.path.join(run_dir, "run"), 0, verbose=0, backup_every=0)
    per_epoch = results["seconds"] / args.epochs
    backup = statistics.median(clocked[1:])  # the first one also creates the folder
    print(f"{args.config}, {args.epochs} epochs, backend {keras.backend.backend()}")
    print(f"backup: {1000 * backup:.0f} ms median ({1000 * min(clocked[1:]):.0f}-{1000 * max(clocked[1:]):.0f}) "
          f"over {len(clocked) - 1} backups; epoch: {per_epoch:.3f} s (backups excluded)")
    print(f"a backup after every epoch adds {100 * backup / per_epoch:.1f}% to the training time; "
          f"--backup-every {args.every:g} adds {100 * backup / max(args.every, per_epoch):.2f}%")


if __name__ == "__main__":
    main()
