"""How far several replicas are from each other, and from one device, after training the same steps.

Runs `tests/distribute/_replica_worker.py` (TSB with 2 students and its bank; DKEL with a 3-branch network, mean
teacher and synchronized batch norm on TensorFlow; 8 steps of global batch 16) once on one device and once per
strategy of the current backend, then prints, per strategy, the largest difference between replicas and the largest
difference from the one-device run, for each kind of state and for fit/evaluate/predict's outputs:

    KERAS_BACKEND=tensorflow python benchmarks/replica_equality.py   # mirrored (2 logical CPUs), 2 worker processes
    KERAS_BACKEND=jax python benchmarks/replica_equality.py          # DataParallel on 2 host devices, 2 processes

The tests in tests/distribute/test_replica_equality.py assert the same comparisons at atol = rtol = 1e-4.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "distribute"))
from replica_runs import run  # noqa: E402

STRATEGIES = {"tensorflow": ["mirrored", "multi_worker"], "jax": ["jax_data_parallel", "jax_processes"]}


def kind(path):
    if path.startswith("ta/"):
        return "bank and counts"
    if path.startswith("teacher:"):
        return "teacher (incl. its batch-norm statistics)"
    if "moving_" in path:
        return "students' batch-norm statistics"
    return "students' weights, heads, optimizer, schedules"


def largest(a, b):
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="tsb,dkel")
    args = parser.parse_args()
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    strategies = STRATEGIES.get(backend)
    if not strategies:
        sys.exit(f"KERAS_BACKEND={backend} has no multi-device strategy in keras-okd (tensorflow or jax).")
    with tempfile.TemporaryDirectory() as workdir:
        results = run(["none"] + strategies, args.method, workdir, backend=backend)
    outputs_one, one = results["none"]
    print(f"backend {backend}; max absolute difference")
    print(f"| strategy | state | between replicas | vs one device |")
    print("|---|---|---|---|")
    for strategy in strategies:
        outputs, variables = results[strategy]
        rows = {}
        for key, copies in variables.items():
            between = max(largest(copy, copies[0]) for copy in copies)
            versus = largest(copies[0], one[key][0])
            old = rows.get(kind(key[2]), (0.0, 0.0))
            rows[kind(key[2])] = (max(old[0], between), max(old[1], versus))
        for name, (between, versus) in sorted(rows.items()):
            print(f"| {strategy} | {name} | {between:.2g} | {versus:.2g} |")
        for (method, output), value in sorted(outputs.items()):
            scale = float(np.max(np.abs(outputs_one[(method, output)])))
            print(f"| {strategy} | {method} {output} (largest value {scale:.3g}) | - | "
                  f"{largest(value, outputs_one[(method, output)]):.2g} |")


if __name__ == "__main__":
    main()
