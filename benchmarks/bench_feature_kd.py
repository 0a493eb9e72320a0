"""Training-step cost of each feature-level online KD method (TSB Table 4's rows) next to DML's, and CRD's memory.

Every arm is `keras_okd.methods.dml(students, features=method)` with the method's defaults (the `dml` arm has no
feature term) on the same M students (default 2 x resnet32, CIFAR-100 shapes, batch 64). All arms are built in one
process on the current backend and timed in interleaved rounds (the order rotating) on the same in-memory random data,
after a full warm-up; the ratio of each arm's images/second to DML's is taken per round and the median over rounds is
reported, because on a 2-core CPU single timings are noisy (REFERENCE.md). tf.data autotuning is switched off.

CRD's memory is `samples x peers x embedding_dim` floats; the table at the end gives its size at CIFAR's 50,000 and
ImageNet's 1,281,167 training images (computed, nothing allocated), and the rows its step reads:
`batch x (negatives + 1) x peers x embedding_dim`.

    KERAS_BACKEND=tensorflow python benchmarks/bench_feature_kd.py --rounds 3 --steps 5
    KERAS_BACKEND=jax python benchmarks/bench_feature_kd.py --methods dml,at,crd --negatives 4096
"""

import argparse
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

import keras_okd
from keras_okd.knowledge.features import METHODS, ContrastiveRepresentation

SIZES = {"CIFAR (50,000)": 50_000, "ImageNet (1,281,167)": 1_281_167}


def dataset(n, shape, classes, batch, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype("float32")
    y = rng.integers(0, classes, n).astype("int32")
    ds = keras_okd.data.with_index(tf.data.Dataset.from_tensor_slices((x, y))).batch(batch, drop_remainder=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.cache().repeat().with_options(options)


def build(method, args):
    keras.utils.set_random_seed(0)
    students = [keras_okd.models.get(args.model, num_classes=args.classes) for _ in range(args.students)]
    features = None
    if method == "crd":
        features = {"crd": {"num_negatives": args.negatives}}
    elif method != "dml":
        features = method
    d = keras_okd.methods.dml(students, features=features, num_train_samples=args.samples)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), coupled_weight_decay=5e-4)
    return d


def images_per_second(distiller, ds, steps, batch):
    start = time.perf_counter()
    distiller.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * batch / (time.perf_counter() - start)


def memory_table(args):
    lines = ["| training set | peers | dim | float32 | bfloat16 / float16 |", "|---|---:|---:|---:|---:|"]
    for label, n in SIZES.items():
        sizes = [ContrastiveRepresentation(n, embedding_dim=args.embedding_dim, memory_dtype=dtype).memory_bytes(
            args.students) for dtype in ("float32", "float16")]
        lines.append(f"| {label} | {args.students} | {args.embedding_dim} | {sizes[0] / 2**20:,.1f} MiB | "
                     f"{sizes[1] / 2**20:,.1f} MiB |")
    read = args.batch * (args.negatives + 1) * args.students * args.embedding_dim * 4
    lines.append(f"A step reads batch x (negatives + 1) x peers x dim = {args.batch} x {args.negatives + 1} x "
                 f"{args.students} x {args.embedding_dim} float32 = {read / 2**20:,.1f} MiB of memory rows, whatever "
                 "the training set's size, and writes the batch's rows.")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(["dml", *METHODS]),
                        help="comma-separated arms among dml and " + ", ".join(METHODS))
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--students", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round and arm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=50_000, help="CRD memory size N (training-set size)")
    parser.add_argument("--negatives", type=int, default=16384, help="CRD negatives per sample (paper: 16384)")
    parser.add_argument("--embedding-dim", type=int, default=128, help="CRD embedding size (for the memory table)")
    parser.add_argument("--memory-only", action="store_true", help="print CRD's memory table and stop")
    args = parser.parse_args()
    print(f"CRD memory (samples x {args.students} peers x {args.embedding_dim}):\n{memory_table(args)}\n")
    if args.memory_only:
        return
    methods = [m.strip() for m in args.methods.split(",")]
    if "dml" not in methods:
        methods.insert(0, "dml")
    unknown = [m for m in methods if m != "dml" and m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose among dml, {', '.join(METHODS)}")

    shape = keras_okd.models.registry.lookup(args.model).input_shape
    ds = dataset(args.batch * args.steps, shape, args.classes, args.batch)
    arms = {m: build(m, args) for m in methods}
    for d in arms.values():  # warm-up: compile, then one full timed-length run
        images_per_second(d, ds, args.steps, args.batch)
    speeds = {m: [] for m in arms}
    ratios = {m: [] for m in arms}
    for r in range(args.rounds):
        order = methods[r % len(methods):] + methods[: r % len(methods)]
        got = {m: images_per_second(arms[m], ds, args.steps, args.batch) for m in order}
        for m in arms:
            speeds[m].append(got[m])
            ratios[m].append(got[m] / got["dml"])
    print(f"backend {keras.backend.backend()}: {args.students} x {args.model}, {args.classes} classes, batch "
          f"{args.batch}, {args.rounds} interleaved rounds of {args.steps} steps; CRD with {args.negatives} negatives")
    print("| arm | images/s (median) | step ms (median) | x DML's step time (median of rounds) |")
    print("|---|---:|---:|---:|")
    for m in methods:
        median = statistics.median(speeds[m])
        slowdown = statistics.median(1.0 / x for x in ratios[m])
        print(f"| {m if m == 'dml' else METHODS[m].label + ' on DML'} | {median:.1f} | "
              f"{1000 * args.batch / median:.0f} | {slowdown:.2f} |")


if __name__ == "__main__":
    main()
