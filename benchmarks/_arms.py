"""Interleaved timing of arms that each run in their own process (shared by bench_dkel_official.py and
bench_small_vs_torch.py).

An arm is a worker process started with a command line and an environment (KERAS_BACKEND is fixed per process). The
worker builds its step, warms it up, prints `{"ready": ...}`, then answers each `run N` line on stdin with one JSON
line `{"wall": seconds, "cpu": seconds}` for N steps, until `quit`. The coordinator builds the arms one at a time and
times them in rounds, the order rotating, while the others wait idle on their pipe.
"""

import json
import statistics
import subprocess
import sys
import time


def thread_environment(threads):
    """Environment variables that cap every engine's CPU threads (torch/MKL/OpenMP, TensorFlow, XLA for JAX)."""
    if not threads:
        return {}
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": n,
            "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={'false' if threads == 1 else 'true'} "
                         f"intra_op_parallelism_threads={n}"}


def serve(timed, steps, name):
    """A worker's loop: warm up with one full-length `timed(steps)`, then answer `run N` / `quit` on stdin."""
    timed(steps)  # compilation and one full-length run
    print(json.dumps({"ready": name}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "quit":
            return
        wall, cpu = timed(int(command[1]))
        print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)


def loop_timer(step):
    """`timed(steps)` for a plain Python step function: one untimed step, then the wall and CPU seconds (all of
    this process's threads) of `steps` steps."""
    def timed(steps):
        step()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        return time.perf_counter() - wall, time.process_time() - cpu
    return timed


class Arm:
    """One worker process: `Arm(name, command, env)`, then `wait_ready()`, `run(steps)` -> (wall, cpu), `close()`."""

    def __init__(self, name, command, env):
        self.name = name
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)

    def _reply(self):
        for line in self.process.stdout:
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"the {self.name} worker exited (status {self.process.wait()}; -9 is often the kernel's "
                           "out-of-memory killer: run fewer arms at once); see its messages above.")

    def wait_ready(self):
        return self._reply()

    def run(self, steps):
        try:
            self.process.stdin.write(f"run {steps}\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # the worker is gone: _reply says so
        reply = self._reply()
        return reply["wall"], reply["cpu"]

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()


def interleaved(arms, rounds, steps, batch):
    """Build and warm up `arms` (a list of callables returning an `Arm`) one at a time, then time `rounds` rounds of
    `steps` steps each, the order rotating; returns {name: [(images per wall second, per CPU second), ...]}."""
    workers = []
    try:
        for make in arms:
            workers.append(make())
            workers[-1].wait_ready()
        speeds = {a.name: [] for a in workers}
        for r in range(rounds):
            for arm in workers[r % len(workers):] + workers[:r % len(workers)]:
                wall, cpu = arm.run(steps)
                speeds[arm.name].append((steps * batch / wall, steps * batch / cpu))
        return speeds
    finally:
        for arm in workers:
            arm.close()


def table_rows(speeds, reference, label, digits):
    """Markdown rows `| label | img/s | / reference (min-max) | img/CPU-s | / reference (min-max) |` of
    `interleaved`'s speeds, medians over rounds; the ratios are taken round by round against `reference`."""
    def ratio(name, k):
        if name == reference or reference not in speeds:
            return ""
        ratios = [s[k] / r[k] for s, r in zip(speeds[name], speeds[reference])]
        return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"

    rows = []
    for name in speeds:
        wall, cpu = (statistics.median(s[k] for s in speeds[name]) for k in (0, 1))
        rows.append(f"| {label(name)} | {wall:.{digits}f} | {ratio(name, 0)} | {cpu:.{digits}f} | {ratio(name, 1)} |")
    return rows
