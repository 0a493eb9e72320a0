"""What each of keras-okd's own step overheads costs, per backend (set KERAS_BACKEND), and what a cut saves.

`step` mode: variants of the DKEL step of bench_dkel_official.py (3-branch ResNet-32, mean teacher, per-branch
views, batch 128), each built in this process and timed by `fit` in interleaved rounds; per round, each variant's
images/s is divided by the unchanged step's, and the median ratio is printed (> 1: faster than the step as it is).

    as_is            the step as keras-okd runs it
    fused_ema        (trees whose distiller has `_ema_step`, one assign per variable) the EMA as one fused update
                     (`fused_lerp` below)
    no_ema           no EMA at all (its whole cost)
    no_trackers      the distiller's metric trackers not updated (the most a cheaper tracking can save)
    no_loss_scale    the plain optimizer instead of LossScaleOptimizer(scale 1) (the wrapper's cost; no guard)
    no_decay         coupled_weight_decay=0 (the cost of the decay term in the loss)
    keras_views      core RandomTranslation + RandomFlip as views (the layers used before RandomShiftFlip)
    no_views         every branch sees the same batch (the views' whole cost)

`micro` mode (any backend, eager): the parts alone on ResNet-32-sized variable lists, repeated: the EMA as one
assign per variable (the loop of `keras_okd.backend`'s generic `lerp_variables`) vs `fused_lerp`; 25 `keras.metrics.Mean` updates vs
two `mean_group.MeanGroup` updates; `LossScaleOptimizer(scale 1).apply` vs the plain optimizer's `apply`;
the teacher's inference forward on three views as the multi-branch model runs it (the trunk once per view) vs the
trunk once on the three views concatenated along the batch, then branch i on its part (the same logits in inference
mode, checked before timing).

    KERAS_BACKEND=torch python benchmarks/bench_step_parts.py micro --repeats 20
    KERAS_BACKEND=jax python benchmarks/bench_step_parts.py step --variants as_is,fused_ema,no_ema --rounds 3 --steps 3
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import bench_dkel_official as bench  # noqa: E402
import keras_okd  # noqa: E402
from mean_group import MeanGroup  # noqa: E402


def loop_lerp(targets, sources, amount):
    """The EMA as one assign per variable (what the distiller did before the fused update)."""
    for t, s in zip(targets, sources):
        t.assign(t + ops.cast(amount, t.dtype) * (ops.stop_gradient(ops.cast(s, t.dtype)) - t))


def fused_lerp(targets, sources, amount):
    """The EMA as one fused update: `keras_okd.backend.lerp_variables` where the tree has it; else under torch one
    `torch._foreach_lerp_` (as keras_okd/backend/torch.py does), elsewhere the loop (compiled steps fuse it)."""
    lerp = getattr(keras_okd.backend, "lerp_variables", None)
    if lerp is not None:
        return lerp(targets, sources, amount)
    if keras.backend.backend() != "torch":
        return loop_lerp(targets, sources, amount)
    import torch

    with torch.no_grad():
        torch._foreach_lerp_([t.value for t in targets], [s.value for s in sources],
                             ops.convert_to_tensor(amount, "float32"))

VARIANTS = ("as_is", "fused_ema", "no_ema", "no_trackers", "no_loss_scale", "no_decay", "keras_views", "no_views")


def _keras_views():
    height, width, _ = bench.SHAPE
    return keras.Sequential([
        keras.layers.RandomTranslation(4 / height, 4 / width, fill_mode="constant", interpolation="nearest"),
        keras.layers.RandomFlip("horizontal"),
    ])


def _trackers(distiller):
    """keras-okd's own metric trackers (every metric of the model but Keras's loss tracker)."""
    return [m for m in distiller.metrics if m is not distiller._loss_tracker]


def build_variant(name):
    keras.utils.set_random_seed(0)
    views = {"keras_views": _keras_views(), "no_views": None}.get(name, keras_okd.data.peer_views(*bench.SHAPE[:2]))
    student = keras_okd.models.multi_branch("resnet32", bench.BRANCHES, num_classes=bench.CLASSES,
                                            input_shape=bench.SHAPE, per_branch_inputs=views is not None)
    distiller = keras_okd.methods.dkel(student, views=views, init_steps=0)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)
    decay = 0.0 if name == "no_decay" else 5e-4
    if name == "no_loss_scale":
        distiller.coupled_weight_decay = decay
        keras.Model.compile(distiller, optimizer=optimizer)
    else:
        distiller.compile(optimizer=optimizer, coupled_weight_decay=decay)
    if name == "fused_ema":
        if not hasattr(distiller, "_weight_pairs"):
            raise SystemExit("fused_ema: this tree's distiller has no per-variable _ema_step to replace.")
        pairs = list(distiller._weight_pairs())
        teachers, students = [t for _, t in pairs], [s for s, _ in pairs]
        distiller._ema_step = lambda amount: fused_lerp(teachers, students, amount)
    if name == "no_ema":
        if hasattr(distiller, "_ema_step"):
            distiller._ema_step = lambda amount: None
        else:  # a MeanTeacher object
            distiller.teacher.update = lambda students, amount=None: None
    if name == "no_trackers":
        for tracker in _trackers(distiller):
            tracker.update_state = lambda *args, **kwargs: None
    return distiller


def step_mode(args):
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or "as_is" not in names:
        raise SystemExit(f"--variants: unknown {unknown} or as_is missing; choose among {', '.join(VARIANTS)}.")
    ds = bench.random_batches(args.batch)
    timers, compiled = {}, {}
    for name in names:  # build and warm up one at a time
        distiller = build_variant(name)
        timers[name] = bench.fit_timer(distiller, ds)
        timers[name](args.steps)
        compiled[name] = distiller.jit_compile
    speeds = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            speeds[name].append(args.steps * args.batch / timers[name](args.steps))
    print(f"backend {keras.backend.backend()}: DKEL step variants, batch {args.batch}, {args.rounds} interleaved "
          f"rounds of {args.steps} steps")
    print("| variant | jit_compile | img/s (median) | vs as_is: median (min-max) |\n|---|---|---:|---|")
    for name in names:
        ratios = [s / a for s, a in zip(speeds[name], speeds["as_is"])]
        print(f"| {name} | {compiled[name]} | {statistics.median(speeds[name]):.1f} | "
              f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")


def _ms(fn, sync):
    """Milliseconds of one call of `fn`, `sync()` (reading a result) included: JAX's eager ops run asynchronously."""
    start = time.perf_counter()
    fn()
    sync()
    return 1000 * (time.perf_counter() - start)


def micro_mode(args):
    keras.utils.set_random_seed(0)
    network = keras_okd.models.multi_branch("resnet32", 3, num_classes=100, input_shape=bench.SHAPE,
                                            per_branch_inputs=True)
    teacher = keras.models.clone_model(network)
    pairs = [(s, t) for s, t in zip(network.weights, teacher.weights) if "float" in str(t.dtype)]
    students, teachers = [s for s, _ in pairs], [t for _, t in pairs]
    amount = ops.convert_to_tensor(0.001, "float32")

    def loop_ema():
        loop_lerp(teachers, students, amount)

    def fused_ema():
        fused_lerp(teachers, students, amount)

    names = [f"value_{i}" for i in range(25)]
    means = [keras.metrics.Mean(name=n) for n in names]
    group_steps, group_samples = MeanGroup(names[:13], name="steps"), MeanGroup(names[13:], name="samples")
    scalars = [ops.convert_to_tensor(float(i), "float32") for i in range(13)]
    rows = ops.convert_to_tensor(np.random.default_rng(0).uniform(size=(128, 12)).astype("float32"))

    def separate_means():  # 13 per-step scalars (losses, spreads) and 12 per-sample values (accuracies)
        for m, v in zip(means[:13], scalars):
            m.update_state(v)
        for i, m in enumerate(means[13:]):
            m.update_state(rows[:, i])

    def grouped_means():
        group_steps.update_state(ops.stack(scalars))
        group_samples.update_state(rows)

    variables = [s for s in network.trainable_variables]
    grads = [ops.ones_like(v) * 1e-6 for v in variables]
    plain = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)
    wrapped = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
                                                  initial_scale=1.0, dynamic_growth_steps=2**30)
    plain.build(variables)
    wrapped.build(variables)

    views = [ops.convert_to_tensor(np.random.default_rng(i).normal(size=(128, *bench.SHAPE)).astype("float32"))
             for i in range(3)]
    trunk = teacher.get_layer("trunk")
    branches = [teacher.get_layer(f"branch_{i}") for i in range(3)]

    def teacher_per_view():
        return teacher(views, training=False)["logits"]

    def teacher_batched():
        features = ops.split(trunk(ops.concatenate(views, axis=0), training=False), 3, axis=0)
        return [branch(f, training=False)[1] for branch, f in zip(branches, features)]

    for a, b in zip(teacher_per_view(), teacher_batched()):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-4, atol=1e-4)
    last = {}

    def keep(fn):
        def run():
            last["out"] = fn()
        return run

    print(f"backend {keras.backend.backend()} (eager), {len(pairs)} teacher/student float variable pairs, "
          f"{len(variables)} trainable variables; median ms per call over {args.repeats} calls")
    print("| part | as keras-okd does it | alternative | ms | alternative ms |\n|---|---|---|---:|---:|")
    def read(variable):
        return lambda: ops.convert_to_numpy(variable)

    for part, a, b, fa, fb, sync in (
        ("teacher EMA", "one assign per variable", "fused_lerp", loop_ema, fused_ema, read(teachers[-1])),
        ("metric trackers", "25 Mean.update_state", "2 MeanGroup.update_state", separate_means, grouped_means,
         read(means[-1].count)),
        ("optimizer apply", "LossScaleOptimizer(scale 1)", "plain SGD (no guard)",
         lambda: wrapped.apply(grads, variables), lambda: plain.apply(grads, variables), read(variables[-1])),
        ("teacher forward, 3 views x 128", "trunk once per view", "trunk once on the concatenated views",
         keep(teacher_per_view), keep(teacher_batched), lambda: ops.convert_to_numpy(last["out"][-1])),
    ):
        fa(), fb()  # first calls build what they build
        ta, tb = [], []
        for _ in range(args.repeats):  # interleaved
            ta.append(_ms(fa, sync))
            tb.append(_ms(fb, sync))
        print(f"| {part} | {a} | {b} | {statistics.median(ta):.2f} | {statistics.median(tb):.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("step", "micro"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    step_mode(args) if args.mode == "step" else micro_mode(args)


if __name__ == "__main__":
    main()
