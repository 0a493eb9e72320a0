"""Training throughput of zoo networks on the current Keras backend.

Measures forward + backward + SGD update images/second with a plain
`model.compile(SGD, SparseCategoricalCrossentropy(from_logits=True))` and
`train_on_batch` on random CIFAR-shaped data, for ResNet-32, WRN-16-4 and a
3-branch ResNet-32 (the multi-branch student's three logits outputs, each with the
same cross-entropy). Warm-up steps (tracing / compilation) are excluded; each figure is
the median over `--repeats` timed runs of `--steps` steps.

Usage (pick the backend with KERAS_BACKEND):

    KERAS_BACKEND=tensorflow python benchmarks/bench_models.py --steps 10 --repeats 3
    KERAS_BACKEND=jax python benchmarks/bench_models.py --batch 64
    KERAS_BACKEND=torch python benchmarks/bench_models.py --models resnet32

On a shared 2-core CPU these timings are noisy (see REFERENCE.md); compare models
measured in one process, not numbers from different runs.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402

from keras_okd import models  # noqa: E402

BENCHMARKS = {
    "resnet32": "ResNet-32",
    "wrn_16_4": "WRN-16-4",
    "resnet32_x3": "ResNet-32, 3 branches",
}


def build(key, num_classes):
    """Returns (model, number of outputs) for one benchmark key."""
    if key == "resnet32_x3":
        student = models.multi_branch("resnet32", num_branches=3, num_classes=num_classes)
        logits = student.output["logits"]
        return keras.Model(student.input, logits, name="resnet32_x3_logits"), len(logits)
    return models.get(key, num_classes=num_classes), 1


def jit_flag(value):
    return {"auto": "auto", "true": True, "false": False}[value]


def bench_one(key, args):
    model, n_outputs = build(key, args.num_classes)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_flag(args.jit_compile),
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, args.num_classes, size=(args.batch,)).astype("int32")
    targets = y if n_outputs == 1 else [y] * n_outputs
    for _ in range(args.warmup):
        model.train_on_batch(x, targets)
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = model.train_on_batch(x, targets)
        np.asarray(loss)  # make sure the last step finished
        rates.append(args.batch * args.steps / (time.perf_counter() - start))
    params = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return params, statistics.median(rates), rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps")
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument(
        "--jit-compile", choices=("auto", "true", "false"), default="auto",
        help="model.compile(jit_compile=...) (default: Keras' 'auto')",
    )
    parser.add_argument(
        "--models", nargs="+", choices=sorted(BENCHMARKS), default=list(BENCHMARKS),
        help="which benchmarks to run",
    )
    args = parser.parse_args(argv)

    backend = keras.backend.backend()
    print(
        f"backend={backend} keras={keras.__version__} batch={args.batch} steps={args.steps} "
        f"repeats={args.repeats} warmup={args.warmup} jit_compile={args.jit_compile} "
        f"classes={args.num_classes} cpus={os.cpu_count()}"
    )
    header = f"{'backend':<11} {'model':<24} {'params':>11} {'img/s (median)':>15}  repeats"
    print(header)
    print("-" * len(header))
    for key in args.models:
        params, median, rates = bench_one(key, args)
        runs = ", ".join(f"{r:.1f}" for r in rates)
        print(f"{backend:<11} {BENCHMARKS[key]:<24} {params:>11,} {median:>15.1f}  [{runs}]", flush=True)


if __name__ == "__main__":
    main()
