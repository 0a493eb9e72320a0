"""Does a resumed run equal the uninterrupted run of the same seed? The shipped digits configs, on this backend.

For each config: train it uninterrupted (seed 0) into one run directory; train it again into another, killed in the
middle of an epoch (a SIGKILL of the training process, at a step of epoch `--kill-epoch`), then rerun the same
command to resume; compare the two runs' final results, `history.csv` files and saved models (every weight of the
students and the ensemble). Prints, per config, whether the results and history are identical and the largest
absolute weight difference.

    KERAS_BACKEND=jax python benchmarks/resume_equality.py                     # configs/digits/*.yaml
    KERAS_BACKEND=torch python benchmarks/resume_equality.py --set epochs=6 --kill-epoch 3

Each run is a `keras-okd train` subprocess (tests/experiments/_fault_worker.py kills it), so import and compile
times are paid per run.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "experiments", "_fault_worker.py")


def work(config, run_dir, log, kill_at=None):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [sys.executable, WORKER, json.dumps(config), run_dir, "0", log] + ([kill_at] if kill_at else [])
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode not in (0, -9):
        raise SystemExit(f"run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.returncode


def compare(a, b):
    ra, rb = (json.load(open(os.path.join(d, "results.json"))) for d in (a, b))
    timing = ("seconds", "session_seconds")
    same_results = {k: v for k, v in ra.items() if k not in timing} == {k: v for k, v in rb.items() if k not in timing}
    same_history = open(os.path.join(a, "history.csv"), "rb").read() == open(os.path.join(b, "history.csv"), "rb").read()
    largest = 0.0
    for name in ra["models"] + ([ra["ensemble"]] if ra.get("ensemble") else []):
        wa = keras.saving.load_model(os.path.join(a, name)).get_weights()
        wb = keras.saving.load_model(os.path.join(b, name)).get_weights()
        largest = max([largest] + [float(np.max(np.abs(u - v))) if u.size else 0.0 for u, v in zip(wa, wb)])
    return same_results, same_history, largest, ra


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", default=sorted(glob.glob(os.path.join(ROOT, "configs", "digits", "*.yaml"))))
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="config overrides")
    parser.add_argument("--kill-epoch", type=int, default=None, help="0-based epoch to kill in (default: the middle)")
    parser.add_argument("--kill-step", type=int, default=3, help="0-based step of that epoch after which to kill")
    args = parser.parse_args()
    from keras_okd.experiments import load_config

    print(f"backend {keras.backend.backend()}, keras {keras.__version__}")
    print("| config | epochs | killed after | results identical | history.csv identical | max abs weight diff | "
          "ensemble acc. (%) |")
    print("|---|---:|---|---|---|---:|---:|")
    for path in args.configs:
        config = dict(load_config(path, args.overrides))
        config["seeds"] = [0]
        epoch = args.kill_epoch if args.kill_epoch is not None else config["epochs"] // 2
        kill_at = f"batch {epoch}:{args.kill_step}"
        with tempfile.TemporaryDirectory() as tmp:
            start = time.time()
            work(config, os.path.join(tmp, "straight"), os.path.join(tmp, "a.log"))
            assert work(config, os.path.join(tmp, "resumed"), os.path.join(tmp, "b.log"), kill_at) == -9
            work(config, os.path.join(tmp, "resumed"), os.path.join(tmp, "b.log"))
            same_results, same_history, largest, results = compare(os.path.join(tmp, "straight"),
                                                                   os.path.join(tmp, "resumed"))
        accuracy = results.get("ensemble_accuracy")
        print(f"| {os.path.relpath(path, ROOT)} | {config['epochs']} | step {args.kill_step + 1} of epoch {epoch + 1} | "
              f"{'yes' if same_results else 'NO'} | {'yes' if same_history else 'NO'} | {largest:.3g} | "
              f"{'–' if accuracy is None else f'{100 * accuracy:.2f}'} |", flush=True)
        print(f"  ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
