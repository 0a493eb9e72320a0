"""Per-step time of the TSB step against the size N of the temporal accumulator's bank (cost must not grow with N).

For each class count C, two TSB distillers with the same tiny students are built in one process on the current
backend (set KERAS_BACKEND): one with a small bank (N = --small) and one with a large bank (N = 50,000 for 100
classes, 1,281,167 for 1,000 classes, or --sizes). Both are trained on the same random images whose indices are
spread over the whole bank, in interleaved rounds (order alternating), after a warm-up; each round times every step
with a callback (the step's loss is read back, so asynchronous backends are timed to completion) and takes the
median; the ratio large / small is taken per round and its median over rounds reported (single timings on a 2-core
CPU are noisy: see REFERENCE.md). A ratio near 1 means the step's cost does not depend on N (the bank is read and
written by rows, in place). The bank's bytes and the process's peak resident memory are printed too: a step that
copied the bank would show up as a peak of at least twice the bank.

    KERAS_BACKEND=jax python benchmarks/bench_bank.py --classes 100 --rounds 5 --steps 20
    KERAS_BACKEND=torch python benchmarks/bench_bank.py --classes 1000 --bank-dtype float16
"""

import argparse
import resource
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

import keras_okd

LARGE = {100: 50_000, 1000: 1_281_167}


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def student(classes, shape, width):
    inputs = keras.Input(shape=shape)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x))


def dataset(n_bank, n_data, shape, classes, batch, seed=0):
    """Random images and labels; their indices are distinct and spread over the whole bank [0, n_bank)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_data, *shape)).astype("float32")
    y = rng.integers(0, classes, n_data).astype("int32")
    index = rng.choice(n_bank, n_data, replace=False).astype("int64")
    ds = tf.data.Dataset.from_tensor_slices(({"inputs": x, "index": index}, y)).batch(batch, drop_remainder=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.cache().repeat().with_options(options)


class StepTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        float(keras.ops.convert_to_numpy((logs or {})["loss"]))  # wait for the step to finish
        self.times.append(time.perf_counter() - self.start)


def build(n, args, classes):
    keras.utils.set_random_seed(0)
    students = [student(classes, args.shape, args.width) for _ in range(args.students)]
    d = keras_okd.methods.tsb(students, num_train_samples=n, warmup_epochs=0, bank_dtype=args.bank_dtype)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return d


def step_time(distiller, ds, steps):
    timer = StepTimer()
    distiller.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    return statistics.median(timer.times)


def run(classes, n_large, args):
    n_data = args.batch * args.steps
    arms = {}
    rss_before = peak_rss_bytes()
    for name, n in (("small", args.small), ("large", n_large)):
        ds = dataset(n, n_data, args.shape, classes, args.batch, seed=1)
        arms[name] = (build(n, args, classes), ds, n)
    rss_built = peak_rss_bytes()
    for d, ds, _ in arms.values():  # warm-up: compile, then one run of the timed length
        step_time(d, ds, args.steps)
        step_time(d, ds, args.steps)
    times = {name: [] for name in arms}
    ratios = []
    for r in range(args.rounds):
        order = list(arms) if r % 2 == 0 else list(arms)[::-1]
        got = {name: step_time(arms[name][0], arms[name][1], args.steps) for name in order}
        for name in arms:
            times[name].append(got[name])
        ratios.append(got["large"] / got["small"])
    bank = arms["large"][0].knowledge[0].bank
    bank_bytes = int(np.prod(bank.shape)) * np.dtype(keras.backend.standardize_dtype(bank.dtype)).itemsize
    rss_after = peak_rss_bytes()
    print(f"\n{keras.backend.backend()}: {args.students} students, {classes} classes, batch {args.batch}, bank dtype "
          f"{args.bank_dtype}, {args.rounds} interleaved rounds of {args.steps} timed steps (median per round)")
    print("| bank N | bank bytes | step ms (median over rounds) |\n|---:|---:|---:|")
    for name, (d, _, n) in arms.items():
        b = d.knowledge[0].bank
        nbytes = int(np.prod(b.shape)) * np.dtype(keras.backend.standardize_dtype(b.dtype)).itemsize
        print(f"| {n:,} | {nbytes:,} | {1000 * statistics.median(times[name]):.2f} |")
    print(f"ratio large/small step time: median {statistics.median(ratios):.3f} "
          f"(rounds: {', '.join(f'{x:.3f}' for x in ratios)})")
    print(f"peak RSS: before build {rss_before / 2**30:.2f} GiB, after build {rss_built / 2**30:.2f} GiB, "
          f"after training {rss_after / 2**30:.2f} GiB (large bank {bank_bytes / 2**30:.2f} GiB)")
    for d, _, _ in arms.values():
        del d
    return statistics.median(ratios)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="large N per class count")
    parser.add_argument("--small", type=int, default=2048, help="small bank N")
    parser.add_argument("--students", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round and arm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bank-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args()
    args.shape = (8, 8, 1)
    sizes = args.sizes or [LARGE.get(c, 50_000) for c in args.classes]
    for classes, n in zip(args.classes, sizes):
        run(classes, n, args)


if __name__ == "__main__":
    main()
