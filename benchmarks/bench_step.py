"""Training-step throughput of TSB against the same students trained independently (CE only).

Both distillers are built in one process on the current backend (set KERAS_BACKEND) and timed in interleaved rounds
(order alternating) on the same in-memory random data, after a full warm-up; the ratio of images/second is taken
per round and the median over rounds is reported, because on a 2-core CPU single timings are noisy (see
REFERENCE.md). tf.data autotuning is switched off for the same reason.

    KERAS_BACKEND=jax python benchmarks/bench_step.py --model resnet32 --classes 100 --rounds 7 --steps 10
"""

import argparse
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

import keras_okd


def dataset(n, shape, classes, batch, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype("float32")
    y = rng.integers(0, classes, n).astype("int32")
    ds = keras_okd.data.with_index(tf.data.Dataset.from_tensor_slices((x, y))).batch(batch, drop_remainder=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.cache().repeat().with_options(options)


def build(method, args, n):
    keras.utils.set_random_seed(0)
    students = [keras_okd.models.get(args.model, num_classes=args.classes, input_shape=args.shape)
                for _ in range(args.students)]
    if method == "tsb":
        d = keras_okd.methods.tsb(students, num_train_samples=n, warmup_epochs=0)
    else:
        d = keras_okd.methods.independent(students)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=5e-4))
    return d


def images_per_second(distiller, ds, steps, batch):
    start = time.perf_counter()
    distiller.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * batch / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--students", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and arm")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--samples", type=int, default=50_000, help="bank size N (training-set size)")
    args = parser.parse_args()
    args.shape = (8, 8, 1) if args.model == "simple_cnn" else (32, 32, 3)

    n_data = args.batch * args.steps
    ds = dataset(n_data, args.shape, args.classes, args.batch)
    arms = {m: build(m, args, args.samples) for m in ("tsb", "independent")}
    for d in arms.values():  # warm-up: compile and one full timed-length run
        images_per_second(d, ds, args.steps, args.batch)
    speeds = {m: [] for m in arms}
    ratios = []
    for r in range(args.rounds):
        order = list(arms) if r % 2 == 0 else list(arms)[::-1]
        got = {m: images_per_second(arms[m], ds, args.steps, args.batch) for m in order}
        for m in arms:
            speeds[m].append(got[m])
        ratios.append(got["tsb"] / got["independent"])
    print(f"backend {keras.backend.backend()}, {args.students} x {args.model}, {args.classes} classes, batch "
          f"{args.batch}, bank {args.samples} x {args.students} x {args.classes} float32, "
          f"{args.rounds} interleaved rounds of {args.steps} steps")
    print("| arm | images/s (median) |\n|---|---:|")
    for m in arms:
        print(f"| {m} | {statistics.median(speeds[m]):.1f} |")
    print(f"ratio tsb / independent: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target >= 0.95")


if __name__ == "__main__":
    main()
