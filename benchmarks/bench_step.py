"""Training-step throughput of an online-KD method against the same networks trained independently (CE only).

    --method tsb   (issue 2): M students with TSB vs the same M students with CE only (default 2 x resnet32, batch 64)
    --method dkel  (issue 4): DKEL on one 3-branch ResNet-32 (per-branch views, mean teacher) vs three independent
                   ResNet-32 networks with CE only (batch 128)

Both arms are built in one process on the current backend (set KERAS_BACKEND) and timed in interleaved rounds
(order alternating) on the same in-memory random data, after a full warm-up; the ratio of images/second is taken per
round and the median over rounds is reported, because on a 2-core CPU single timings are noisy (REFERENCE.md).
tf.data autotuning is switched off for the same reason. A round's time runs from the end of the first step of a
`fit` call to the end of its last (`fit`'s per-call setup is not counted; bench_dkel_official.fit_timer).
The DKEL arm's views are `keras_okd.data.peer_views` (compiled on JAX; see bench_dkel_official.py for the official
code's step).

    KERAS_BACKEND=jax python benchmarks/bench_step.py --method tsb --rounds 7 --steps 10
    KERAS_BACKEND=torch python benchmarks/bench_step.py --method dkel --rounds 5 --steps 5
"""

import argparse
import os
import statistics
import sys

import keras
import numpy as np
import tensorflow as tf

import keras_okd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_dkel_official import fit_timer  # noqa: E402


def dataset(n, shape, classes, batch, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype("float32")
    y = rng.integers(0, classes, n).astype("int32")
    ds = keras_okd.data.with_index(tf.data.Dataset.from_tensor_slices((x, y))).batch(batch, drop_remainder=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.cache().repeat().with_options(options)


def build(arm, args):
    keras.utils.set_random_seed(0)
    single = lambda: keras_okd.models.get(args.model, num_classes=args.classes, input_shape=args.shape)  # noqa: E731
    if arm == "independent":
        d = keras_okd.methods.independent([single() for _ in range(args.students)])
    elif arm == "tsb":
        d = keras_okd.methods.tsb([single() for _ in range(args.students)], num_train_samples=args.samples,
                                  warmup_epochs=0)
    else:
        student = keras_okd.models.multi_branch(args.model, args.students, num_classes=args.classes,
                                                input_shape=args.shape, per_branch_inputs=True)
        d = keras_okd.methods.dkel(student, views=keras_okd.data.peer_views(*args.shape[:2]), init_steps=0)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), coupled_weight_decay=5e-4)
    return d


def images_per_second(timer, steps, batch):
    return steps * batch / timer(steps)


def interleaved(distillers, ds, args):
    """`(speeds, ratios)`: each arm's images/s per round and the first arm's ratio to the second per round, the arms
    timed in `args.rounds` interleaved rounds of `args.steps` steps (order alternating) after a full warm-up."""
    arms = {m: fit_timer(d, ds) for m, d in distillers.items()}
    for timer in arms.values():  # warm-up: compile, then one full timed-length run
        images_per_second(timer, args.steps, args.batch)
    first, second = list(arms)
    speeds = {m: [] for m in arms}
    ratios = []
    for r in range(args.rounds):
        order = list(arms) if r % 2 == 0 else list(arms)[::-1]
        got = {m: images_per_second(arms[m], args.steps, args.batch) for m in order}
        for m in arms:
            speeds[m].append(got[m])
        ratios.append(got[first] / got[second])
    return speeds, ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=("tsb", "dkel"), default="tsb")
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--students", type=int, default=None, help="students / branches (tsb: 2, dkel: 3)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (tsb: 64, dkel: 128)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and arm")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--samples", type=int, default=50_000, help="TSB bank size N (training-set size)")
    args = parser.parse_args()
    args.students = args.students or (2 if args.method == "tsb" else 3)
    args.batch = args.batch or (64 if args.method == "tsb" else 128)
    args.shape = (8, 8, 1) if args.model == "simple_cnn" else (32, 32, 3)

    ds = dataset(args.batch * args.steps, args.shape, args.classes, args.batch)
    speeds, ratios = interleaved({m: build(m, args) for m in (args.method, "independent")}, ds, args)
    networks = (f"{args.students} x {args.model}" if args.method == "tsb"
                else f"{args.model} with {args.students} branches vs {args.students} independent {args.model}")
    print(f"backend {keras.backend.backend()}, {args.method}: {networks}, {args.classes} classes, batch {args.batch}, "
          f"{args.rounds} interleaved rounds of {args.steps} steps")
    print("| arm | images/s (median) |\n|---|---:|")
    for m in speeds:
        print(f"| {m} | {statistics.median(speeds[m]):.1f} |")
    print(f"ratio {args.method} / independent: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})" + ("; target >= 0.95" if args.method == "tsb" else ""))


if __name__ == "__main__":
    main()
