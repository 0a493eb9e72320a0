"""keras-okd's Fashion-MNIST runs next to the independent plain-PyTorch implementation (benchmarks/minimal_okd_torch.py)
of the same recipe: per method, the average student accuracy and its paired difference to independent training over
the seeds both implementations ran, with a 95% Student-t interval.

    python benchmarks/side_by_side.py --runs runs/fashion_cpu/small_5k/fashion_mnist_simple_cnn \
        --torch runs/minimal_torch/independent.log runs/minimal_torch/independent_12.log \
                runs/minimal_torch/dml.log runs/minimal_torch/tsb.log

The torch logs are minimal_okd_torch.py's outputs (its "seed k: <method> test accuracy, students [...]" lines).
"""

import argparse
import json
import os
import re

from keras_okd.experiments.stats import paired_difference


def torch_runs(paths):
    runs = {}
    for path in paths:
        for line in open(path):
            match = re.match(r"seed (\d+): (\w+) test accuracy, students \[([^\]]*)\]", line)
            if match:
                students = [float(a) for a in match.group(3).split(",")]
                runs.setdefault(match.group(2), {})[int(match.group(1))] = sum(students) / len(students)
    return runs


def keras_okd_runs(root):
    runs = {}
    for method in sorted(os.listdir(root)):
        for seed_dir in sorted(os.listdir(os.path.join(root, method))):
            path = os.path.join(root, method, seed_dir, "results.json")
            if os.path.exists(path):
                results = json.load(open(path))
                accuracy = results["net_accuracy"]
                runs.setdefault(method, {})[results["seed"]] = 100 * sum(accuracy) / len(accuracy)
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="keras-okd runs: <dir>/<method>/seed_<s>/results.json")
    parser.add_argument("--torch", nargs="+", required=True, help="minimal_okd_torch.py logs")
    args = parser.parse_args(argv)
    implementations = {"keras-okd": keras_okd_runs(args.runs), "plain PyTorch": torch_runs(args.torch)}
    seeds = sorted(set.intersection(*[set(runs) for impl in implementations.values() for runs in impl.values()]))
    print(f"seeds both implementations ran for every method: {seeds}\n")
    print("| implementation | method | Avg (%) | Avg - independent [95% CI] |\n|---|---|---:|---|")
    for name, runs in implementations.items():
        base = {s: runs["independent"][s] for s in seeds}
        for method in ("independent", "dml", "tsb"):
            values = {s: runs[method][s] for s in seeds}
            mean = sum(values.values()) / len(values)
            if method == "independent":
                cell = "baseline"
            else:
                d = paired_difference(values, base)
                low, high = d["interval"]
                cell = f"{d['mean']:+.2f} [{low:+.2f}, {high:+.2f}] n={d['n']} ({d['verdict']})"
            print(f"| {name} | {method} | {mean:.2f} | {cell} |")


if __name__ == "__main__":
    main()
