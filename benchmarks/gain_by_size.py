"""TSB's and DML's gain over independent training against the training set's size, from the ledger (issue 19: why
does the gain grow with the data?).

For every ledger tag given (default: the no-augmentation regimes of two simple_cnn_8, 150 epochs unless the tag says
otherwise), one line per TSB or DML row of `keras-okd report`: the samples per epoch and steps per epoch, the
independent students' test and training accuracy and training cross-entropy, the row's paired gain (95% interval) and its students' training
accuracy in the last epoch and training cross-entropy. Every figure is what `keras-okd report ledger/<tag>` computes.

    python benchmarks/gain_by_size.py
    python benchmarks/gain_by_size.py --tags n1000_plain n1000x2_plain n2000_plain
"""

import argparse
import math
import os
import statistics

from keras_okd.experiments import report

TAGS = ("n500_plain", "n1000_plain", "n1000_300ep", "n1000x2_plain", "n2000_plain", "n5000_plain", "n10000_plain")
METHODS = ("tsb", "dml")


def samples_of(config):
    dataset = config["dataset"]
    return int(dataset.get("train_size") or 60_000) * int(dataset.get("repeats", 1))


def train_ce(group):
    """The students' mean training cross-entropy in the last epoch, over the runs."""
    values = []
    for run in group.runs:
        ces = [run.final.get(f"student_{i}_ce") for i in range(len(run.networks))]
        if all(isinstance(c, float) for c in ces):
            values.append(statistics.fmean(ces))
    return statistics.fmean(values) if values else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ledger", default=os.path.join(os.path.dirname(__file__), "..", "ledger"))
    parser.add_argument("--tags", nargs="+", default=list(TAGS))
    args = parser.parse_args()
    print("| tag | samples | steps/epoch | epochs | Ind test | Ind train | Ind train CE | method | Δ Avg vs Ind [95% CI] | train | "
          "train CE |\n|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for tag in args.tags:
        path = os.path.join(args.ledger, tag)
        if not os.path.isdir(path):
            print(f"| {tag} | no records |  |  |  |  |  |  |  |  |  |")
            continue
        runs, _ = report.runs_from([path])
        groups = [g for g in report.build_groups(runs) if len(g.networks) == 2]
        baseline = next((g for g in groups if report.is_baseline(g)), None)
        for group in groups:
            if group.method not in METHODS or baseline is None:
                continue
            paired = report.paired_to_independent(groups, group)["avg"]
            samples, batch = samples_of(group.config), int(group.config["dataset"].get("batch_size", 64))
            ind, ind_train = baseline.average(), baseline.train_average()
            train = group.train_average()
            print(f"| {tag} | {samples} | {math.ceil(samples / batch)} | {group.config['epochs']} | "
                  f"{100 * ind[0]:.2f} | {100 * ind_train[0]:.2f} | {train_ce(baseline):.3f} | {group.label} ({group.config['experiment']}) | "
                  f"{report._paired_cell(paired)} | {100 * train[0]:.2f} | {train_ce(group):.3f} |")


if __name__ == "__main__":
    main()
