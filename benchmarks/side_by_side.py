"""keras-okd's Fashion-MNIST runs next to the independent plain-PyTorch implementation (benchmarks/minimal_okd_torch.py)
of the same recipe: per method, each network's accuracy and the average's, with the paired difference to independent
training over the seeds both implementations ran and its 95% Student-t interval (each network against the same
network trained alone, so a heterogeneous group shows each member's own gain).

    python benchmarks/side_by_side.py --ledger ledger/n1000_hetero32 \
        --torch runs/minimal_torch/n1000_plain_independent.log runs/minimal_torch/n1000_plain_dml.log \
                runs/minimal_torch/n1000_plain_tsb.log

A method with records of more than one config (a tag that also holds 3-student runs, an ablation of it, a feature
method on DML) is refused, naming the configs: pass the records of one config, `ledger/<tag>/<method>-<hash>-*`.

keras-okd's side: ledger records (keras_okd.experiments.ledger) or run directories (`--runs`, `<method>/seed_<s>/
results.json`). The torch logs are minimal_okd_torch.py's outputs (its "seed k: <method> test accuracy, students
[...]" lines).
"""

import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from keras_okd.experiments.stats import paired_difference  # noqa: E402


def torch_runs(paths):
    """`{method: {seed: [accuracy of each student, %]}}` of minimal_okd_torch.py logs."""
    runs = {}
    for path in paths:
        for line in open(path):
            match = re.match(r"seed (\d+): (\w+) test accuracy, students \[([^\]]*)\]", line)
            if match:
                runs.setdefault(match.group(2), {})[int(match.group(1))] = [float(a) for a in match.group(3).split(",")]
    return runs


def keras_okd_runs(ledger_paths=(), run_root=None):
    """`{method: {seed: [accuracy of each network, %]}}` of ledger records or run directories."""
    runs = {}
    results = []
    if ledger_paths:
        from keras_okd.experiments import ledger

        results = [ledger.read_record(p) for p in ledger.find_records(ledger_paths)]
    if run_root:
        for method in sorted(os.listdir(run_root)):
            for seed_dir in sorted(os.listdir(os.path.join(run_root, method))):
                path = os.path.join(run_root, method, seed_dir, "results.json")
                if os.path.exists(path):
                    results.append(json.load(open(path)))
    configs = {}
    for r in results:
        configs.setdefault(r["method"], {}).setdefault(r.get("config_hash") or r.get("experiment"), []).append(r)
    for method, found in configs.items():
        if len(found) > 1:
            kinds = "; ".join(f"{key} ({rs[0].get('config', {}).get('experiment', rs[0].get('experiment'))}, "
                              f"{len(rs)} runs)" for key, rs in found.items())
            raise SystemExit(f"side_by_side: the keras-okd runs hold {len(found)} configs of {method}: {kinds}. Pass "
                             f"the records of one, e.g. --ledger ledger/<tag>/{method}-<hash>-*.record.json")
        for r in next(iter(found.values())):
            runs.setdefault(method, {})[r["seed"]] = [100 * a for a in r["net_accuracy"]]
    return runs


def table(implementations, methods=("independent", "dml", "tsb")):
    """Markdown rows: per implementation and method, each network's mean accuracy and the average's, with the paired
    difference to independent training (per network and for the average) over the seeds every row shares."""
    seeds = sorted(set.intersection(*[set(impl[m]) for impl in implementations.values() for m in methods
                                      if m in impl]))
    width = max(len(v) for impl in implementations.values() for runs in impl.values() for v in runs.values())
    lines = [f"seeds both implementations ran for every method: {seeds}", "",
             "| implementation | method | " + " | ".join(f"Net {i + 1} (%) | Δ Net {i + 1}" for i in range(width))
             + " | Avg (%) | Δ Avg vs independent [95% CI] |",
             "|---|---|" + "---:|---|" * width + "---:|---|"]

    def cell(values, base):
        if values is base:
            return "baseline"
        d = paired_difference(values, base)
        if d["interval"] is None:
            return f"{d['mean']:+.2f} (n={d['n']})"
        low, high = d["interval"]
        return f"{d['mean']:+.2f} [{low:+.2f}, {high:+.2f}] n={d['n']}"

    for name, runs in implementations.items():
        base = {s: runs["independent"][s] for s in seeds}
        for method in methods:
            if method not in runs:
                continue
            values = {s: runs[method][s] for s in seeds}
            cells = []
            for i in range(width):
                per = {s: v[i] for s, v in values.items()}
                per_base = {s: v[i] for s, v in base.items()}
                mean = sum(per.values()) / len(per)
                cells.append(f"{mean:.2f} | {cell(per, per if method == 'independent' else per_base)}")
            avg = {s: sum(v) / len(v) for s, v in values.items()}
            avg_base = {s: sum(v) / len(v) for s, v in base.items()}
            lines.append(f"| {name} | {method} | " + " | ".join(cells) + f" | {sum(avg.values()) / len(avg):.2f} | "
                         f"{cell(avg, avg if method == 'independent' else avg_base)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledger", nargs="+", default=[], help="keras-okd ledger folders or records")
    parser.add_argument("--runs", default=None, help="keras-okd runs: <dir>/<method>/seed_<s>/results.json")
    parser.add_argument("--torch", nargs="+", default=[], help="minimal_okd_torch.py logs (none: keras-okd alone)")
    args = parser.parse_args(argv)
    if not args.ledger and not args.runs:
        parser.error("give --ledger and/or --runs (keras-okd's side).")
    implementations = {"keras-okd": keras_okd_runs(args.ledger, args.runs)}
    if args.torch:
        implementations["plain PyTorch"] = torch_runs(args.torch)
    print(table(implementations))


if __name__ == "__main__":
    main()
