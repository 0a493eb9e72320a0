"""Training-step throughput of MCL, L-MCL or SwitOKD next to DML's, on the same networks (issue 22).

    --method mcl      2 x resnet32 (CIFAR-100 shapes, batch 128): MCL's heads, memory reads of 8192 keys per anchor
                      and memory writes, against DML
    --method lmcl     the same pair: L-MCL's heads and memory slots for stage_1, stage_2 and pool of each network
                      (6 slots), every slot scored against every slot, against DML
    --method switokd  the same pair: SwitOKD's switch (three L1 distances per step), against DML
    --method lmcl_meta  L-MCL with its meta-optimised layer-pair weights (weighting="meta"): the training step (pair
                      weights from the projections) against DML, then the meta step itself (a second-order
                      look-ahead of 3 SGD steps, run after every 50th batch) timed alone, and the throughput with one
                      meta step per 50 training steps
    --method lmcl_full  the same with the auxiliary branches and aggregator as well (auxiliary=True: the paper's
                      method, configs/lmcl/cifar100_resnet32x2.yaml)

Both arms are built in one process on the current backend and timed in interleaved rounds (order alternating) on
the same in-memory random data after a full warm-up; the median of the per-round ratios of images/second is reported
(benchmarks/bench_step.py's method: on a 2-core CPU single timings are noisy).

    KERAS_BACKEND=tensorflow python benchmarks/bench_step_vs_dml.py --method mcl --rounds 5 --steps 5

Measured on 2 shared CPU cores (load average 8-12 from other jobs; TensorFlow; `--rounds 3 --steps 3`):
MCL with 8192 keys per anchor 13.1 img/s against DML's 51.0, ratio 0.261 (0.256-0.278); with `--negatives 1024`
42.8 against 56.5, ratio 0.913 (0.579-1.004); SwitOKD 40.0 against 50.9, ratio 0.784 (0.700-0.877). MCL's cost is
its per-anchor keys: each step gathers batch x keys memory rows per network (1 GB at 128 x 8192 x 2 x 128 floats)
and scores every anchor against every network's rows, as the authors' ImageNet code does.
L-MCL (`--method lmcl`, same run conditions, load average 8-10, `--rounds 3 --steps 3`): 4.7 img/s against DML's 54.0,
ratio 0.088 (0.063-0.088): 6 slots (3 layers x 2 networks), so 3 times MCL's key reads and 9 times its scores.
L-MCL with meta weights (`--method lmcl_meta --batch 64 --negatives 1024 --samples 10000 --rounds 3 --steps 3`, 2026-12-02,
load average 4.5 from two training jobs; benchmarks/results/2026-12-02-lmcl-meta/bench_tensorflow.txt): training step
63.0 img/s against DML's 87.0, ratio 0.705 (0.501-0.838); one meta step 6.46 s (5.90-6.57), 6.4 L-MCL training
steps; with one meta step per 50 training steps 55.9 img/s, 0.643 of DML's.
L-MCL as the paper builds it (`--method lmcl_full`, the same arguments, 2026-12-02, load average 6.5 from two
training jobs; benchmarks/results/2026-12-02-lmcl-full/bench_tensorflow.txt): training step 25.4 img/s against DML's
115.5, ratio 0.220 (0.186-0.326): each network also runs its two auxiliary branches (new copies of its stages 2-3
and of its stage 3, each with a classifier); one meta step 19.75 s (17.73-21.81), 7.9 training steps; with one per 50
training steps 22.0 img/s, 0.190 of DML's.
"""

import argparse
import os
import statistics
import sys

import keras

import keras_okd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import dataset, interleaved  # noqa: E402


def build(arm, args):
    keras.utils.set_random_seed(0)
    students = [keras_okd.models.get(args.model, num_classes=args.classes, input_shape=args.shape)
                for _ in range(args.students)]
    if arm in ("mcl", "lmcl"):
        d = keras_okd.methods.get(arm)(students, num_train_samples=args.samples, num_negatives=args.negatives)
    elif arm in ("lmcl_meta", "lmcl_full"):
        d = keras_okd.methods.lmcl(students, num_train_samples=args.samples, num_negatives=args.negatives,
                                   weighting="meta", auxiliary=arm == "lmcl_full")
    elif arm == "switokd":
        d = keras_okd.methods.switokd(students)
    else:
        d = keras_okd.methods.dml(students)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), coupled_weight_decay=5e-4)
    return d


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=("mcl", "lmcl", "lmcl_meta", "lmcl_full", "switokd"), default="mcl")
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--students", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round and arm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=50_000, help="MCL / L-MCL memory size N (training-set size)")
    parser.add_argument("--negatives", type=int, default=8192, help="MCL / L-MCL keys per anchor")
    args = parser.parse_args()
    args.shape = (8, 8, 1) if args.model.startswith("simple_cnn") else (32, 32, 3)

    ds = dataset(args.batch * args.steps, args.shape, args.classes, args.batch)
    distillers = {m: build(m, args) for m in (args.method, "dml")}
    speeds, ratios = interleaved(distillers, ds, args)
    keyed = args.method in ("mcl", "lmcl", "lmcl_meta", "lmcl_full")
    print(f"backend {keras.backend.backend()}, {args.method} vs dml: {args.students} x {args.model}, {args.classes} "
          f"classes, batch {args.batch}, {args.rounds} interleaved rounds of {args.steps} steps"
          + (f", {args.negatives} keys per anchor, memory of {args.samples}" if keyed else ""))
    print("| arm | images/s (median) |\n|---|---:|")
    for m in speeds:
        print(f"| {m} | {statistics.median(speeds[m]):.1f} |")
    print(f"ratio {args.method} / dml: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f})")
    if args.method in ("lmcl_meta", "lmcl_full"):
        meta_step(distillers[args.method], ds, args, statistics.median(speeds[args.method]),
                  statistics.median(speeds["dml"]))


def meta_step(distiller, ds, args, step_speed, dml_speed, every=50):
    """Time the meta step alone (`outer_step` on one batch; the first call compiles it), and print the throughput
    with one meta step per `every` training steps."""
    import time

    import numpy as np

    inputs, labels = next(iter(ds))
    inputs, labels = {k: np.asarray(v) for k, v in inputs.items()}, np.asarray(labels)
    part = distiller.knowledge[0]
    part.outer_step(distiller, inputs, labels)
    seconds = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        part.outer_step(distiller, inputs, labels)
        seconds.append(time.perf_counter() - start)
    meta = statistics.median(seconds)
    step = args.batch / step_speed
    amortised = every * args.batch / (every * step + meta)
    print(f"meta step: median {meta:.2f} s over {args.rounds} (min {min(seconds):.2f}, max {max(seconds):.2f}), "
          f"{meta / step:.1f} training steps of L-MCL; with one per {every} steps: {amortised:.1f} images/s, "
          f"{amortised / dml_speed:.3f} of DML's")


if __name__ == "__main__":
    main()
