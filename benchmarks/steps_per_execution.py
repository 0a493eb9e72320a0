"""Does Keras's `steps_per_execution` cut the per-step cost of the evidence campaign's small networks?

Trains the campaign's TSB pair (two simple_cnn_8, 1,000 stratified Fashion-MNIST images, batch 64, SGD momentum 0.9,
lr 0.01) for a few epochs with `compile(steps_per_execution=k)` for each k given, in one process per k, one thread
each, and prints the CPU seconds per epoch (process time: robust to other jobs on the cores, unlike wall time), the
median over the epochs after the first two (tracing), their ratio to k = 1, and the final loss (equal for every k:
the same steps). TensorFlow and JAX only: Keras's torch trainer refuses `steps_per_execution > 1`.

    KERAS_BACKEND=tensorflow python benchmarks/steps_per_execution.py --spe 1 16 --rounds 2
    KERAS_BACKEND=jax python benchmarks/steps_per_execution.py --spe 1 16

Measured 2026-12-02 on this 2-core VM with two campaign trainings on the cores (the commands above; CPU seconds per
epoch, median of epochs 3-8): TensorFlow k = 1: 0.277, 0.304; k = 16: 0.260, 0.286 (0.94x); JAX k = 1: 0.412, k = 16:
0.472 (1.14x), final losses equal. The per-step cost of these networks is not Keras's per-batch Python loop (which
k = 16 runs once per 16 steps), so the campaign keeps k = 1.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def one_run(spe, epochs, samples):
    import keras
    import numpy as np

    import keras_okd

    (x, y), _ = keras_okd.data.fashion_mnist_arrays()
    rows = keras_okd.data.stratified_subset(y, samples, seed=0)
    x, y = x[rows], y[rows]
    keras.utils.set_random_seed(0)
    students = [keras_okd.models.get("simple_cnn_8", input_shape=x.shape[1:]) for _ in range(2)]
    distiller = keras_okd.methods.tsb(students, num_train_samples=samples)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), steps_per_execution=spe)
    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.process_time() - self.start)

    history = distiller.fit({"inputs": x, "index": np.arange(samples)}, y, batch_size=64, epochs=epochs, verbose=0,
                            callbacks=[Clock()])
    print(json.dumps({"spe": spe, "cpu_per_epoch": times, "loss": float(history.history["loss"][-1])}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spe", type=int, nargs="+", default=[1, 16], help="steps_per_execution values")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1, help="runs of every value, alternating")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        return one_run(args.one, args.epochs, args.samples)
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
    results = {spe: [] for spe in args.spe}
    for _ in range(args.rounds):
        for spe in args.spe:
            out = subprocess.run([sys.executable, __file__, "--one", str(spe), "--epochs", str(args.epochs),
                                  "--samples", str(args.samples)], env=env, capture_output=True, text=True, check=True)
            record = json.loads(out.stdout.strip().splitlines()[-1])
            per_epoch = sorted(record["cpu_per_epoch"][2:])
            results[spe].append((per_epoch[len(per_epoch) // 2], record["loss"]))
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    base = min(median for median, _ in results[args.spe[0]])
    for spe, runs in results.items():
        medians = ", ".join(f"{median:.3f}" for median, _ in runs)
        print(f"{backend} steps_per_execution={spe}: CPU s per epoch {medians} (ratio of the best to "
              f"steps_per_execution={args.spe[0]}: {min(m for m, _ in runs) / base:.2f}); final loss "
              f"{runs[0][1]:.4f}")


if __name__ == "__main__":
    main()
