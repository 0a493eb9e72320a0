"""The evidence campaign's small networks: keras-okd's training step beside the plain-PyTorch implementation
(benchmarks/minimal_okd_torch.py), same students, same method, one core each.

Students: two `simple_cnn_8` on 28x28x1 inputs (Fashion-MNIST's shape), 10 classes, batch 128, SGD momentum 0.9 with
coupled weight decay 5e-4; method --method (independent, dml or tsb with its KD terms on from the first step).

Arms, each in its own process, capped at --threads threads (default 1: one core each):
- `plain`: minimal_okd_torch's `SimpleCNN`, `total_loss` and `TemporalBank`, its loop body (forward, loss,
  backward, SGD step, and the three per-student statistics it reads with `.item()` every step).
- `BACKEND` (tensorflow, jax, torch): keras-okd as the campaign runs it: `OnlineDistiller.fit` on an in-memory
  tf.data pipeline with sample indices (its batch-by-batch input checks, the method's schedules, the collapse
  monitor, the progress bar (silent, verbose=0) and the non-finite guard).
- `BACKEND:VARIANT` takes one per-step cost away, to measure it:
  `nochecks` (no input checks in the pipeline), `nocallbacks` (none of fit's callbacks but the guard),
  `noguard` (no non-finite guard), `keras` (none of the three: `keras.Model.fit` on the raw pipeline),
  `numpy` (`fit` from numpy arrays instead of tf.data); and `plainkeras` is no keras-okd at all: the same students
  as one functional Keras model with one cross-entropy per output and no weight-decay term, `keras.Model.fit` on
  the same pipeline (the engine's and Keras's own cost for these networks: independent training in Keras alone).
All arms are built and warmed up first, then timed in --rounds interleaved rounds of --steps steps, the order
rotating. A keras-okd arm's time runs from the end of its first step to the return of `fit` (which waits for JAX's
asynchronous steps); the plain arm's from the end of an untimed step to the end of the last. Printed: images per
wall and per CPU second (medians over rounds) and each arm's ratio to `plain` (median, min-max over rounds).

    python benchmarks/bench_small_vs_torch.py --method tsb --rounds 5 --steps 60
    python benchmarks/bench_small_vs_torch.py --arms plain,tensorflow,tensorflow:keras,tensorflow:noguard
"""

import argparse
import os
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _arms import Arm, interleaved, loop_timer, serve, table_rows, thread_environment  # noqa: E402

BACKENDS = ("tensorflow", "jax", "torch")
VARIANTS = ("fit", "nochecks", "nocallbacks", "noguard", "keras", "numpy", "plainkeras")
SHAPE, CLASSES = (28, 28, 1), 10


def plain_step(args):
    """minimal_okd_torch's training step for `args.method` on a fixed random batch (indices cycling for TSB)."""
    import torch
    import torch.nn.functional as F

    import minimal_okd_torch as plain

    torch.manual_seed(0)
    models = [plain.SimpleCNN(args.width) for _ in range(args.students)]
    optimizer = torch.optim.SGD([p for m in models for p in m.parameters()], lr=0.01, momentum=0.9,
                                weight_decay=5e-4)
    for model in models:
        model.train()
    n = args.samples
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, SHAPE[2], *SHAPE[:2], generator=generator)
    y = torch.randint(0, CLASSES, (n,), generator=generator)
    bank = plain.TemporalBank(n, args.students, CLASSES, 0.8) if args.method == "tsb" else None
    options = types.SimpleNamespace(temperature=4.0, beta=0.8, lambda_ta=0.5, lambda_si=0.5, warmup=0)
    position = [0]

    def step():
        start = position[0] % (n // args.batch * args.batch)
        index = torch.arange(start, start + args.batch)
        position[0] += args.batch
        xb, yb = x[index], y[index]
        logits = [model(xb) for model in models]
        loss = plain.total_loss(args.method, logits, yb, index, 1, options, bank)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # the statistics its loop reads every step
            for z in logits:
                F.cross_entropy(z, yb).item(), (z.argmax(-1) == yb).float().mean().item()
                z.std(-1, unbiased=False).mean().item()

    return step


def keras_okd_timer(args, variant):
    """`timed(steps)` running `steps + 1` steps of keras-okd's `fit` in `variant` (see the module docstring)."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_okd
    from keras_okd import callbacks as okd_callbacks
    from keras_okd.distiller import safety

    keras.utils.set_random_seed(0)
    students = [keras_okd.models.get(f"simple_cnn_{args.width}", num_classes=CLASSES, input_shape=SHAPE)
                for _ in range(args.students)]
    if args.method == "tsb":
        distiller = keras_okd.methods.tsb(students, num_train_samples=args.samples, warmup_epochs=0)
    else:
        distiller = getattr(keras_okd.methods, args.method)(students)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), coupled_weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = rng.random((args.samples, *SHAPE), dtype="float32")
    y = rng.integers(0, CLASSES, args.samples).astype("int32")
    options = tf.data.Options()
    options.autotune.enabled = False
    ds = keras_okd.data.with_index(tf.data.Dataset.from_tensor_slices((x, y)))
    ds = ds.batch(args.batch, drop_remainder=True).cache().repeat().with_options(options)

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                self.first = (time.perf_counter(), time.process_time())

    clock = Clock()

    if variant == "plainkeras":
        inputs = keras.Input(SHAPE)
        plain = keras.Model(inputs, [student(inputs) for student in students])
        plain.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * len(students))
        pairs = ds.map(lambda x, y: (x["inputs"], tuple([y] * len(students))))

    def fit(steps):
        if variant == "plainkeras":
            return plain.fit(pairs, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
        if variant == "fit":
            return distiller.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
        if variant == "numpy":
            n = steps * args.batch
            return distiller.fit(x[:n], y[:n], batch_size=args.batch, epochs=1, shuffle=False, verbose=0,
                                 callbacks=[clock])
        checks = variant != "nochecks" and variant != "keras"
        data = distiller._data.training(ds, None) if checks else ds
        callbacks = [clock]
        if variant in ("nochecks", "noguard"):
            callbacks = okd_callbacks.for_fit(distiller, callbacks)
        if variant != "noguard" and variant != "keras":
            callbacks.append(safety.Guard(True))
        return keras.Model.fit(distiller, data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False,
                               callbacks=callbacks)

    def timed(steps):
        fit(steps + 1)
        wall0, cpu0 = clock.first
        return time.perf_counter() - wall0, time.process_time() - cpu0

    return timed


def worker(args):
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(args.threads)
    if args.worker == "plain":
        timed = loop_timer(plain_step(args))
    else:
        timed = keras_okd_timer(args, args.worker.partition(":")[2] or "fit")
    serve(timed, args.steps, args.worker)


def make_arm(name, args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **thread_environment(args.threads))
    if name != "plain":
        env["KERAS_BACKEND"] = name.partition(":")[0]
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--method", args.method,
               "--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads),
               "--width", str(args.width), "--students", str(args.students)]
    return lambda: Arm(name, command, env)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default="plain,tensorflow,jax,torch",
                        help="comma-separated: plain, BACKEND or BACKEND:VARIANT (variants: " + ", ".join(VARIANTS)
                        + ")")
    parser.add_argument("--method", default="tsb", choices=["independent", "dml", "tsb"])
    parser.add_argument("--width", type=int, default=8, help="simple_cnn width of every student")
    parser.add_argument("--students", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per arm and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per arm (0: the engines' defaults)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.samples = (args.steps + 1) * args.batch  # numpy arms index every sample of a call's arrays
    if args.worker:
        return worker(args)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in arms if a != "plain" and (a.partition(":")[0] not in BACKENDS
                                                or (a.partition(":")[2] or "fit") not in VARIANTS)]
    if bad or not arms:
        parser.error(f"--arms: unknown {bad}; use plain, BACKEND or BACKEND:VARIANT with BACKEND in "
                     f"{', '.join(BACKENDS)} and VARIANT in {', '.join(VARIANTS)}.")
    speeds = interleaved([make_arm(a, args) for a in arms], args.rounds, args.steps, args.batch)

    threads = f"{args.threads} thread(s) per arm" if args.threads else "engines' default threads"
    print(f"{args.method}, {args.students} x simple_cnn_{args.width}, 28x28x1, batch {args.batch}; {args.rounds} "
          f"interleaved rounds of {args.steps} steps per arm, one process per arm, {threads}")
    print("| arm | img/s | / plain (min-max) | img/CPU-s | / plain (min-max) |\n|---|---:|---|---:|---|")

    label = lambda name: "plain PyTorch (minimal_okd_torch.py)" if name == "plain" else f"keras-okd, {name}"  # noqa: E731
    print("\n".join(table_rows(speeds, "plain", label, 0)))

if __name__ == "__main__":
    main()
