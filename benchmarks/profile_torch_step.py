"""Where the PyTorch DKEL step's time goes: keras-okd (KERAS_BACKEND=torch) beside the official code.

Each part of the step is wrapped with a wall clock (on a CPU torch runs synchronously, so a part's clock is its cost;
a part nested in another is subtracted from the outer one):

- keras-okd: the per-peer views, the student forward, the teacher forward, the teacher's EMA, the loss (without its
  metric trackers), the metric trackers (`update_state` of every metric, the step's loss tracker included),
  `loss.backward()`, the optimizer (`LossScaleOptimizer`'s own work, and the wrapped SGD's apply), and
  `compute_metrics` (the step's logs). "fit loop, data, other" is the rest of the time between two batch ends.
- official (with `--official PATH`, see bench_dkel_official.py): its model's forward, the mean model's forward, its
  loss wrapper, `backward`, `optimizer.step`, `update_ema_variables`, and the rest of its loop.

The hooks name keras-okd's internals (`peers.views_of`, `peers.forward`, `teacher.catch_up`, ...); a part whose
hook is missing is listed as not measured. Both arms run in this one process, alternating, `--rounds` times `--steps` steps (after the
first step of each round); the tables give the median milliseconds per step of each part. `--cprofile N` prints the N
costliest functions of keras-okd's step (cProfile, by own time) instead; `--ops N` the N costliest torch operators of
each arm (torch.profiler, self CPU time per step), which tells the engine's kernels apart from the step's own work.

    python benchmarks/profile_torch_step.py --official /path/to/checkout --steps 3 --rounds 3
"""

import argparse
import collections
import os
import statistics
import sys
import time

os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import torch  # noqa: E402

import bench_dkel_official as bench  # noqa: E402


class Clocks:
    """Wall time per part; time spent in a nested clocked part is subtracted from the part around it."""

    def __init__(self):
        self.totals = collections.Counter()
        self.stack = []

    def wrap(self, part, fn):
        def clocked(*args, **kwargs):
            start = time.perf_counter()
            self.stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                inner = self.stack.pop()
                spent = time.perf_counter() - start
                self.totals[part] += spent - inner
                if self.stack:
                    self.stack[-1] += spent

        return clocked

    def take(self):
        totals, self.totals = self.totals, collections.Counter()
        return totals


def _hook(clocks, owner, name, part, missing):
    if hasattr(owner, name):
        setattr(owner, name, clocks.wrap(part, getattr(owner, name)))
    else:
        missing.append(part)


def _metrics(distiller):
    """Every metric object the distiller updates in a step (its own trackers and Keras's loss tracker)."""
    found, stack = {}, [distiller._loss_tracker] + [v for v in vars(distiller).values()]
    while stack:
        item = stack.pop()
        if isinstance(item, keras.metrics.Metric):
            found[id(item)] = item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return list(found.values())


def instrument_keras_okd(clocks, distiller):
    """Clock each part of the distiller's step; returns the parts that could not be hooked."""
    missing = []
    _hook(clocks, distiller.peers, "views_of", "views", missing)
    if distiller.teacher:
        _hook(clocks, distiller.teacher, "catch_up", "teacher EMA", missing)
    forward = distiller.peers.forward
    student, teacher = clocks.wrap("student forward", forward), clocks.wrap("teacher forward", forward)
    distiller.peers.forward = lambda networks, *a, **k: (teacher if networks is distiller.teachers else student)(
        networks, *a, **k)
    _hook(clocks, distiller, "compute_loss", "loss (without trackers)", missing)
    _hook(clocks, distiller, "compute_metrics", "compute_metrics (logs)", missing)
    for metric in _metrics(distiller):
        metric.update_state = clocks.wrap("metric trackers", metric.update_state)
    optimizer = distiller.optimizer
    _hook(clocks, optimizer, "apply", "optimizer: LossScaleOptimizer wrapper", missing)
    _hook(clocks, optimizer, "scale_loss", "optimizer: LossScaleOptimizer wrapper", missing)
    if hasattr(optimizer, "inner_optimizer"):
        _hook(clocks, optimizer.inner_optimizer, "apply", "optimizer: SGD", missing)
    return missing


def clocked_backward(clocks):
    """A context in which `torch.Tensor.backward` is clocked."""
    import contextlib

    @contextlib.contextmanager
    def context():
        backward = torch.Tensor.backward
        torch.Tensor.backward = clocks.wrap("backward (autograd)", backward)
        try:
            yield
        finally:
            torch.Tensor.backward = backward

    return context()


def keras_okd_round(clocks, distiller, ds, steps):
    class Split(keras.callbacks.Callback):
        ends = []

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:
                clocks.take()  # drop the first step's parts

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    split = Split()
    with clocked_backward(clocks):
        distiller.fit(ds, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[split])
    parts = clocks.take()
    total = split.ends[-1] - split.ends[0]
    parts["fit loop, data, other"] = total - sum(parts.values())
    return parts, total


def official_round(clocks, official, steps):
    official.step()
    clocks.take()
    start = time.perf_counter()
    with clocked_backward(clocks):
        for _ in range(steps):
            official.step()
    total = time.perf_counter() - start
    parts = clocks.take()
    parts["loop, other"] = total - sum(parts.values())
    return parts, total


def instrument_official(clocks, official):
    controller = official.controller
    controller.model.forward = clocks.wrap("student forward", controller.model.forward)
    controller.mean_model.forward = clocks.wrap("teacher forward", controller.mean_model.forward)
    controller.loss_wrapper.forward = clocks.wrap("loss", controller.loss_wrapper.forward)
    controller.optimizer.step = clocks.wrap("optimizer: SGD", controller.optimizer.step)
    official.ema = clocks.wrap("teacher EMA", official.ema)


def operator_table(run, steps, top):
    """The `top` costliest torch operators of `run()` (self CPU ms per step), and the share of all operators' time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    lines = ["| operator | calls/step | self ms/step | share |", "|---|---:|---:|---:|"]
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        lines.append(f"| {e.key} | {e.count / steps:.0f} | {e.self_cpu_time_total / 1000 / steps:.1f} | "
                     f"{100 * e.self_cpu_time_total / total:.0f}% |")
    calls = sum(e.count for e in events) / steps
    lines.append(f"| all aten operators | {calls:.0f} | {total / 1000 / steps:.1f} | 100% |")
    return "\n".join(lines)


def print_operator_tables(distiller, ds, official, steps, top):
    """Where the engine's time goes: torch.profiler over `steps` steps of each arm (after a warm-up step)."""
    print(f"\nkeras-okd, {steps} steps:")
    print(operator_table(lambda: distiller.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0), steps, top))
    if official is not None:
        official.step()

        def run():
            for _ in range(steps):
                official.step()

        print(f"\nofficial, {steps} steps:")
        print(operator_table(run, steps, top))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", help="path to a checkout of the official DKEL code")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)")
    parser.add_argument("--cprofile", type=int, default=0, help="print the N costliest functions instead")
    parser.add_argument("--ops", type=int, default=0,
                        help="print the N costliest torch operators of each arm (torch.profiler, self CPU time) "
                             "instead")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; keras {keras.__version__}")
    clocks = Clocks()
    distiller, ds = bench.keras_okd_dkel(), bench.random_batches(args.batch)
    distiller.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)  # builds the optimizer and trackers; warm-up
    if args.cprofile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        distiller.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.cprofile)
        return
    if args.ops:
        official = bench.OfficialDKEL(args.official, args.batch) if args.official else None
        print_operator_tables(distiller, ds, official, args.steps, args.ops)
        return
    missing = instrument_keras_okd(clocks, distiller)
    arms = {"keras-okd": lambda: keras_okd_round(clocks, distiller, ds, args.steps)}
    if args.official:
        official = bench.OfficialDKEL(args.official, args.batch)
        instrument_official(clocks, official)
        arms["official"] = lambda: official_round(clocks, official, args.steps)
    rows = collections.defaultdict(list)
    for r in range(args.rounds):
        for arm in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            parts, total = arms[arm]()
            rows[(arm, "total")].append(1000 * total / args.steps)
            for part, seconds in parts.items():
                rows[(arm, part)].append(1000 * seconds / args.steps)
    print(f"DKEL step on torch, batch {args.batch}: median ms per step over {args.rounds} rounds of {args.steps} "
          "steps, arms alternating")
    for arm in arms:
        total = statistics.median(rows[(arm, "total")])
        parts = sorted((p for a, p in rows if a == arm and p != "total"), key=lambda p: -statistics.median(rows[(arm, p)]))
        print(f"\n{arm}: {total:.0f} ms per step ({args.batch * 1000 / total:.1f} img/s)")
        print("| part | ms/step | share |\n|---|---:|---:|")
        for part in parts:
            value = statistics.median(rows[(arm, part)])
            print(f"| {part} | {value:.1f} | {100 * value / total:.0f}% |")
    if missing:
        print(f"\nnot measured (hook not found): {', '.join(missing)}")


if __name__ == "__main__":
    main()
