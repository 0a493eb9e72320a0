"""DKEL's training step: the official PyTorch code next to keras-okd on TensorFlow, PyTorch and JAX.

The official code (Shao et al., github.com/shaoeric/Decoupled-Knowledge-with-Ensemble-Learning-for-Online-Distillation)
is not part of keras-okd: pass a checkout of it with `--official PATH`. Its own modules run unchanged: the 3-branch
ResNet-32 (`src/models/resnet.py`), the loss (`src/losses`: CE, KDLoss, PMLoss in `LossWrapper`), one training step
(`src/controller.py`, `Controller.train_step`) and the EMA (`src/utils/ema.py`, `update_ema_variables`), with the
optimizer of its config (SGD lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4). The three views of each batch are
made outside the step, as its data loader does: the timed loop feeds one fixed random batch `(B, 3, 3, 32, 32)`.
The only shim: `src/__init__.py` (which imports its data sets, logger and trainer, with their dependencies) is
bypassed by registering `src` and `src.utils` as bare packages, so that only the modules above are imported.

keras-okd: `keras_okd.methods.dkel` on `multi_branch("resnet32", 3, per_branch_inputs=True)` with
`views=keras_okd.data.peer_views(32, 32)` (the views are made inside the step), the same optimizer (coupled weight
decay 5e-4), fed by `fit` from an in-memory tf.data pipeline of random CIFAR-100-shaped data.

Fairness on a small shared CPU: every arm runs in its own process (KERAS_BACKEND is fixed per process), all built and
warmed up first (compilation, one full-length run), then timed in interleaved rounds: in each round every arm runs
`--steps` steps in turn while the others wait idle on a pipe, the order rotating from round to round. An arm's time
is from the end of its first step to the end of its last (keras-okd: batch-end callbacks, which also synchronise
like the official loop's `loss.item()`), so `fit`'s per-call setup is not counted. tf.data autotuning is off. Each
round gives a ratio keras-okd / official per backend; the median over rounds is printed with its range, for images
per wall-clock second and per CPU second of the arm's process. On a machine other jobs load, `--threads 1` (every
engine on one thread) and the CPU-second figures are the steadier comparison: PyTorch's OpenMP threads suffer most
when the cores are oversubscribed.

    python benchmarks/bench_dkel_official.py --official /path/to/checkout --rounds 3 --steps 5
    python benchmarks/bench_dkel_official.py --official PATH --arms official,jax   # a subset of arms
    python benchmarks/bench_dkel_official.py --official PATH --arms official,jax,jax@/tmp/old --threads 1

An arm `BACKEND@TREE` runs keras-okd imported from the directory TREE (e.g. an older commit's `git archive`), so a
change is measured before and after in the same interleaved rounds.
"""

import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _arms import Arm, interleaved, loop_timer, serve, table_rows, thread_environment  # noqa: E402

ARMS = ("official", "tensorflow", "torch", "jax")
CLASSES, SHAPE, BRANCHES = 100, (32, 32, 3), 3


# ---------------------------------------------------------------------------------------------- workers
class OfficialDKEL:
    """One official DKEL training step (+ EMA) on a fixed random batch, from a checkout of the official code.

    `step()` runs one step as its Trainer.train loop does (Controller.train_step, update_ema_variables, loss.item());
    `timed(steps)` runs one untimed step, then returns the seconds `steps` steps took. `controller` and `ema` are
    the official objects, for profiling.
    """

    def __init__(self, path, batch, seed=0):
        import types

        import torch

        for name in ("src", "src.utils"):  # bare packages: skip src/__init__.py's imports of data, logger, trainer
            module = types.ModuleType(name)
            module.__path__ = [os.path.join(path, *name.split("."))]
            sys.modules[name] = module
        sys.path.insert(0, path)
        from src.controller import Controller
        from src.losses import LossBuilder, LossWrapper
        from src.models.resnet import resnet32
        from src.utils.ema import update_ema_variables

        torch.manual_seed(seed)
        model = resnet32(num_classes=CLASSES, ema=False)
        mean_model = copy.deepcopy(model)  # as its main.py builds the mean model
        mean_model.ema = True
        mean_model.set_trainable(False)  # as after its init_mean_model
        wrapper = LossWrapper([LossBuilder.load(n) for n in ("CrossEntropyLoss", "KDLoss", "PMLoss")], [1.0] * 3,
                              exp=0.5)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
        self.controller = Controller(loss_wrapper=wrapper, model=model, mean_model=mean_model, optimizer=optimizer)
        self.ema = update_ema_variables
        model.train()
        mean_model.train()  # as its Trainer.train does
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(batch, BRANCHES, SHAPE[2], *SHAPE[:2], generator=generator)
        self.labels = torch.randint(0, CLASSES, (batch,), generator=generator)
        self.global_step = 0

    def step(self):
        loss, _, _ = self.controller.train_step(self.images, self.labels, epoch=0)
        self.ema(self.controller.model, self.controller.mean_model, alpha=0.999, global_step=self.global_step)
        loss.item()  # the official loop reads the loss every step
        self.global_step += 1

    def timed(self, steps):
        """Wall and CPU seconds (all of this process's threads) of `steps` steps, after one untimed step."""
        return loop_timer(self.step)(steps)


def keras_okd_dkel(seed=0):
    """keras-okd's DKEL on a 3-branch ResNet-32 with per-branch views, compiled with the official optimizer."""
    import keras

    import keras_okd

    keras.utils.set_random_seed(seed)
    student = keras_okd.models.multi_branch("resnet32", BRANCHES, num_classes=CLASSES, input_shape=SHAPE,
                                            per_branch_inputs=True)
    distiller = keras_okd.methods.dkel(student, views=keras_okd.data.peer_views(*SHAPE[:2]), init_steps=0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), coupled_weight_decay=5e-4)
    return distiller


def random_batches(batch, seed=0):
    """An endless in-memory tf.data pipeline of random CIFAR-100-shaped batches, autotuning off."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4 * batch, *SHAPE)).astype("float32")
    y = rng.integers(0, CLASSES, len(x)).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.cache().repeat().with_options(options)


def fit_timer(distiller, ds, cpu=False):
    """A function running `steps + 1` steps with `fit` and returning the seconds from the first step's end to the
    last's (fit's per-call setup and the first step are not counted); with `cpu=True`, the pair (wall seconds, CPU
    seconds of all of this process's threads)."""
    import keras

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.ends.append((time.perf_counter(), time.process_time()))

    clock = Clock()

    def timed(steps):
        clock.ends = []
        distiller.fit(ds, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[clock])
        (wall0, cpu0), (wall1, cpu1) = clock.ends[0], clock.ends[-1]
        return (wall1 - wall0, cpu1 - cpu0) if cpu else wall1 - wall0

    return timed


def worker(args):
    """Build the arm, warm it up, then answer `run N` with the seconds N steps took (one JSON line each)."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker == "official":
        timed = OfficialDKEL(args.official, args.batch).timed
    else:
        timed = fit_timer(keras_okd_dkel(), random_batches(args.batch), cpu=True)
    serve(timed, args.steps, args.worker)


# ---------------------------------------------------------------------------------------------- coordinator
def make_arm(name, args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **thread_environment(args.threads))
    backend, _, tree = name.partition("@")
    if backend != "official":
        env["KERAS_BACKEND"] = backend
    if tree:
        env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(tree)] + [p for p in [env.get("PYTHONPATH")] if p])
    command = [sys.executable, os.path.abspath(__file__), "--worker", backend, "--batch", str(args.batch),
               "--steps", str(args.steps), "--threads", str(args.threads)]
    command += ["--official", args.official] if args.official else []
    return lambda: Arm(name, command, env)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", help="path to a checkout of the official DKEL code")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per arm and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="cap every arm's CPU threads (0: the engines' defaults, one per core)")
    parser.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted({a.partition("@")[0] for a in arms} - set(ARMS))
    trees = [a.partition("@")[2] for a in arms if "@" in a]
    missing = [t for t in trees if not os.path.isdir(os.path.join(t, "keras_okd"))]
    if missing:
        parser.error(f"--arms: {missing} hold no keras_okd package (BACKEND@TREE needs TREE/keras_okd).")
    if unknown or not arms:
        parser.error(f"--arms: unknown {unknown}; choose among {', '.join(ARMS)}.")
    if "official" in arms and not (args.official and os.path.isfile(os.path.join(args.official, "src", "controller.py"))):
        parser.error("--official must be a checkout of the official DKEL code (with src/controller.py); "
                     "without one, leave 'official' out of --arms.")

    speeds = interleaved([make_arm(name, args) for name in arms], args.rounds, args.steps, args.batch)

    threads = f"threads capped at {args.threads}" if args.threads else "engines' default threads"
    print(f"DKEL step, 3-branch ResNet-32 with its mean teacher, {CLASSES} classes, batch {args.batch}; "
          f"{args.rounds} interleaved rounds of {args.steps} steps per arm, one process per arm, {threads}")
    print("img/s: images per wall-clock second; img/CPU-s: images per CPU second of the arm's process (all its "
          "threads), which other jobs on the machine disturb less")
    print("| implementation | img/s (median) | keras-okd / official (min-max) | img/CPU-s (median) | "
          "keras-okd / official (min-max) |\n|---|---:|---|---:|---|")

    def label(name):
        backend, _, tree = name.partition("@")
        text = "DKEL official PyTorch code" if name == "official" else f"keras-okd, {backend}"
        return text + (f" (keras_okd from {tree})" if tree else "")

    print("\n".join(table_rows(speeds, "official", label, 1)))

if __name__ == "__main__":
    main()
