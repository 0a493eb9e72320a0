"""`keras-okd report`: the papers' result tables and training curves from run directories.

Table (Markdown, one section per `paper` of the configs): one row per experiment setting (dataset, networks,
method with its non-default params), columns

    Ind | Net 1 | Net 2 | ... | Ens | Avg | Δ Avg vs Ind [95% CI] | Δ Ens vs Ind [95% CI] | Runs | Epochs

* Net i: student i's (or branch i's) top-1 test accuracy after the last epoch (`val_student_{i}_accuracy`; for the
  methods that deploy a mean teacher, PCL and DKEL, the teacher's peer i, `val_teacher_{i}_accuracy`, as the papers
  report);
* Ens: the ensemble's (`val_ensemble_accuracy`, the peers' averaged predictions; teacher: `val_teacher_ensemble_...`);
* Avg: the mean of the Net columns;
* Ind: the accuracy of the same network trained alone: the students of the `independent` runs among the given ones
  with the same dataset and architecture, of the closest recipe (preferring the same paper, then the same
  experiment, dataset options, epochs, optimizer and schedule, then the same number of networks); "a / b" when the
  networks differ. Only independent
  runs of separate networks are baselines: an `independent` run of one multi-branch student (its branches trained
  with cross-entropy alone) is a row like any method's, compared with them: what the branches' shared layers give
  without any knowledge transfer;
* with several runs of one config (seeds), `mean ± std` (sample standard deviation) over them;
* Δ Avg vs Ind: the paired difference to independent training, in accuracy points. For each seed that the row and
  its independent runs (those of Ind) share, d_s = Avg of the row's seed-s run - the independent seed-s runs'
  accuracy of each Net's architecture, averaged over the Nets; the cell is mean(d) [mean(d) -+ t s_d / sqrt(n)] n=n,
  with s_d the sample standard deviation of the d_s and t the 0.975 quantile of Student's t with n - 1 degrees of
  freedom (`keras_okd.experiments.stats.t_quantile`: `scipy.stats.t.ppf`): a 95% confidence interval of the mean gain.
  Runs of one seed start from the same weights and draw the same shuffle order and augmentation (the runner
  derives them from the seed: on the digits, TSB's 3 warm-up epochs without KD give exactly the independent runs'
  per-epoch test accuracies, seed by seed, in their `history.csv`), so the pairing takes that part of the
  seed-to-seed variation out of the comparison;
* Δ Ens vs Ind: the same for Ens against the ensemble of the independent runs of the same networks (same
  architectures, same number; for a multi-branch student, that many independent full networks);
* instead of a number: `baseline` (the independent rows of separate networks), `no independent run`, `no shared
  seed`, or
  `+d (n=1, no interval)` when one seed is paired.

Under each table, a sentence per column says which rows are better than independent training (interval above
zero), worse (below zero), or not distinguishable (the interval holds zero), and which have no interval and why.
`report.json` holds, per row, the seeds and, under `paired_avg` and `paired_ensemble`, the paired seeds, the
per-seed differences, n, mean, std, t, interval, verdict, the reason for a missing interval, and the independent runs
compared with.

Runs of one config are the run directories whose `config.yaml` agree except for the seed. A run that has not
finished all its epochs is reported with its last epoch, and its Epochs cell reads `done/total`. A damaged run
directory is reported, not fatal: a run whose `config.yaml` does not read, or with no complete epoch in `history.csv`,
is left out with a note saying why; a row cut short or a damaged `results.json` is noted and the rest is used.

Curves (PNG, one per dataset and networks): per-epoch test loss (`val_student_{i}_ce`) and test accuracy
(`val_student_{i}_accuracy`, or the teacher's peer for PCL/DKEL) of every student, one line per method (mean over
seeds, shaded min-max), the view of the TSB paper's Fig. 5.
"""

import json
import os
import re
import statistics

from keras_okd.experiments import ledger
from keras_okd.experiments.config import load_run_config
from keras_okd.experiments.runner import CONFIG, HISTORY, RESULTS, metric_keys, read_history
from keras_okd.experiments.state import DiskError, atomic_json, atomic_save, atomic_write, disk_errno, read_json
from keras_okd.experiments.stats import BETTER, UNDISTINGUISHED, WORSE, paired_difference
from keras_okd.knowledge.features import METHODS

METHOD_LABELS = {name: part.label for name, part in METHODS.items()}  # "at" -> "AT", in TSB Table 4's order

_SKIP = {"backup", "tensorboard", "report"}


class NoRunsError(FileNotFoundError):
    """Nothing to report: a path is not a directory, or no run under it has a complete epoch."""


class OutDirectoryError(NotADirectoryError):
    """The report's output path (`--out`) exists and is not a directory; raised by `make_report` before reading
    any run. The CLI prints the message and exits with status 2.

    Example:

    ```python
    try:
        make_report(["runs/x"], "notes.txt")      # an existing file
    except OutDirectoryError as error:
        print(error)                              # "... is a file, not a directory: pass --out DIR ..."
    ```
    """


class Run:
    """One run directory: its config, history rows and results (if complete).

    `problems` lists what is damaged (rows of `history.csv` that were skipped, a `results.json` that does not read).
    The config's plugins (`imports:`) are not imported unless `import_plugins` (`load_run_config`): a report reads
    names and numbers only.

    Raises:
        ConfigError: its `config.yaml` does not read.
    """

    def __init__(self, path, import_plugins=False):
        self.path = path
        self.problems = []
        self.config = load_run_config(os.path.join(path, CONFIG), import_plugins)
        self.history = read_history(os.path.join(path, HISTORY), self.problems)
        self.results = None
        if os.path.exists(os.path.join(path, RESULTS)):
            results, problem = read_json(os.path.join(path, RESULTS))
            if problem or not isinstance(results, dict):
                self.problems.append(f"{problem or os.path.join(path, RESULTS) + ' holds no results'}; "
                                     "its numbers come from history.csv")
            else:
                self.results = results

    @property
    def final(self):
        return self.history[-1] if self.history else {}

    @property
    def epochs_done(self):
        """Epochs completed: one more than the last logged epoch (0 before the first)."""
        return int(self.final["epoch"]) + 1 if self.history else 0

    @property
    def networks(self):
        students = self.config["students"]
        if isinstance(students, dict):
            return (students["model"],) * students["branches"]
        return tuple(students)

    @property
    def branched(self):
        return isinstance(self.config["students"], dict)

    @property
    def deploy(self):
        """`"teacher"` for runs whose method deploys its mean teacher (PCL, DKEL): their Net and Ens columns are the
        teacher's, as in the papers."""
        if self.results and "deploy" in self.results:
            return self.results["deploy"]
        return "teacher" if "val_teacher_0_accuracy" in self.final else "students"

    @property
    def keys(self):
        return metric_keys(self.final, len(self.networks), self.deploy)

    @property
    def ensemble_key(self):
        return self.keys["ensemble"]

    def net_accuracies(self):
        return [self.final.get(k) for k in self.keys["accuracy"]]

    def average_accuracy(self):
        """The mean of the Net accuracies (None if one is missing)."""
        accs = self.net_accuracies()
        return statistics.fmean(accs) if accs and all(a is not None for a in accs) else None

    def ensemble_accuracy(self):
        return self.final.get(self.ensemble_key)

    def train_accuracy(self):
        """The mean over the peers of their training accuracy in the last epoch (None if one is not logged)."""
        peer = "branch" if "branch_0_accuracy" in self.final else "student"
        accs = [self.final.get(f"{peer}_{i}_accuracy") for i in range(len(self.networks))]
        return statistics.fmean(accs) if all(isinstance(a, float) for a in accs) else None

    @property
    def seed(self):
        """The run's seed (`results.json`, else the resolved config's single seed); None if neither says."""
        if self.results and isinstance(self.results.get("seed"), int) and not isinstance(self.results["seed"], bool):
            return self.results["seed"]
        seeds = self.config.get("seeds") or []
        return seeds[0] if len(seeds) == 1 else None


def find_runs(paths):
    """Run directories (holding `config.yaml` and `history.csv`) at or below `paths`, sorted."""
    found = set()
    for path in paths:
        path = str(path)
        if not os.path.isdir(path):
            if os.path.isfile(path) and path.endswith(ledger.SUFFIX):
                continue  # a ledger record (`runs_from` reads it)
            raise NoRunsError(f"{path} is not a directory or a ledger record"
                              f"{'' if os.path.exists(path) else ' (it does not exist)'}.")
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP and not d.startswith("."))  # .worker{i}: copies
            if CONFIG in files and HISTORY in files:
                found.add(os.path.normpath(root))
    return sorted(found)


class RecordRun(Run):
    """A ledger record (`keras_okd.experiments.ledger`) read as a run: its config, the logs of its validated epochs
    and its results.

    Raises:
        keras_okd.experiments.ledger.LedgerError: the record does not read.
    """

    def __init__(self, path):
        record = ledger.read_record(path)
        self.path, self.problems = path, []
        self.config, self.history, self.results = record["config"], record["history"], record


def runs_from(paths, import_plugins=False):
    """`(runs, problems)`: the run directories and ledger records at or below `paths` that have a complete epoch,
    and what was left out or partly read, and why. `import_plugins`: as `make_report`'s (run directories only; a
    record's config is read as written).

    Raises:
        NoRunsError: a path is neither a directory nor a record, or nothing was found under the paths.
    """
    from keras_okd.experiments.config import ConfigError

    paths = [str(p) for p in paths]
    found = [(lambda p: Run(p, import_plugins), p) for p in find_runs(paths)] + [
        (RecordRun, p) for p in ledger.find_records(paths)]
    if not found:
        raise NoRunsError(f"No run directories (with {CONFIG} and {HISTORY}) or ledger records "
                          f"(*{ledger.SUFFIX}) under {', '.join(paths)}.")
    runs, problems = [], []
    for kind, path in found:
        try:
            run = kind(path)
        except ConfigError as error:
            problems.append(f"{path}: left out, its {CONFIG} does not read: {error}")
            continue
        except ledger.LedgerError as error:
            problems.append(f"{path}: left out: {error}")
            continue
        problems += [f"{path}: {p}" for p in run.problems]
        if run.history:
            runs.append(run)
        else:
            problems.append(f"{path}: left out, {HISTORY} has no complete epoch yet")
    if not runs:
        raise NoRunsError(f"No run under {', '.join(paths)} has a complete epoch to report:\n  " +
                          "\n  ".join(problems))
    return runs, problems


def _group_key(config):
    return json.dumps({k: v for k, v in config.items() if k != "seeds"}, sort_keys=True)


def method_label(config):
    """The method name with the params that differ from the preset's defaults, e.g. `tsb (spatial=False)`; DML with
    feature-level knowledge reads as TSB Table 4 names its rows, e.g. `AT (on DML)`."""
    import inspect

    import keras_okd.methods

    name, params = config["method"]["name"], config["method"]["params"]
    try:
        defaults = {k: p.default for k, p in inspect.signature(keras_okd.methods.get(name)).parameters.items()}
    except ValueError:
        defaults = {}
    features = feature_methods(config)
    if features:
        params = {k: v for k, v in params.items() if k != "features"}
    changed = [f"{k}={v}" for k, v in params.items() if k not in defaults or defaults[k] != v]
    if features:
        return f"{' + '.join(METHOD_LABELS.get(f, f) for f in features)} (on DML{''.join(', ' + c for c in changed)})"
    return f"{name} ({', '.join(changed)})" if changed else name


def feature_methods(config):
    """The feature methods a `dml` config adds (`params.features`: a name, `{name: params}`, or a list), lower-case."""
    features = config["method"]["params"].get("features") if config["method"]["name"] == "dml" else None
    if not features:
        return []
    names = []
    for item in features if isinstance(features, list) else [features]:
        names += [str(k).lower() for k in item] if isinstance(item, dict) else [str(item).lower()]
    return names


def _method_rank(group):
    """Rows of a table: independent, DML, DML with feature methods (in TSB Table 4's order), then the rest."""
    if group.method == "independent":
        return 0, 0
    if group.method != "dml":
        return 2, 0
    order = list(METHOD_LABELS)
    ranks = [order.index(f) + 1 for f in feature_methods(group.config) if f in order]
    return 1, min(ranks, default=0)


def networks_label(run):
    students = run.config["students"]
    if isinstance(students, dict):
        return f"{students['model']} ({students['branches']} branches)"
    return ", ".join(students)


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return mean, std, len(values)


def _cell(stat):
    if stat is None:
        return "–"
    mean, std, _ = stat
    return f"{100 * mean:.2f}" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f}"


class Group:
    """Runs of one config (different seeds)."""

    def __init__(self, runs):
        self.runs = runs
        first = runs[0]
        self.config = first.config
        self.paper = first.config["paper"]
        self.dataset = first.config["dataset"]["name"]
        self.networks = first.networks
        self.branched = first.branched
        self.method = first.config["method"]["name"]
        self.label = method_label(first.config)
        self.networks_label = networks_label(first)

    def nets(self):
        return [_stats([r.net_accuracies()[i] for r in self.runs]) for i in range(len(self.networks))]

    def ensemble(self):
        return _stats([r.ensemble_accuracy() for r in self.runs])

    def average(self):
        return _stats([r.average_accuracy() for r in self.runs])

    def train_average(self):
        return _stats([r.train_accuracy() for r in self.runs])

    def by_seed(self, value):
        """`{seed: value(run)}` over the runs with a known seed and a value (the mean where runs share a seed)."""
        values = {}
        for r in self.runs:
            v = value(r)
            if r.seed is not None and v is not None:
                values.setdefault(r.seed, []).append(v)
        return {seed: statistics.fmean(vs) for seed, vs in values.items()}

    def epochs_cell(self):
        total = self.config["epochs"]
        done = min(r.epochs_done for r in self.runs)
        return str(total) if done >= total else f"{done}/{total}"


#: What an independent baseline should share with a row, most important first: among the independent runs on the
#: row's dataset that train the architecture, the closest recipe is kept (each step narrows only if some run is left),
#: and last the same number of networks (a 2-student ablation beside 2- and 3-student independent runs of another
#: experiment pairs with the 2-student ones).
_RECIPE_KEYS = ("paper", "experiment", "dataset", "epochs", "optimizer", "schedule")


def is_baseline(group):
    """Whether `group` is a baseline: independent training of separate networks (not of one multi-branch student)."""
    return group.method == "independent" and not group.branched


def baseline_groups(groups, group, arch=None):
    """The independent groups that are `group`'s baseline: same dataset, training `arch` (None: the same networks,
    for the ensemble), with the closest recipe (same paper, then experiment, dataset options, epochs, optimizer,
    schedule, then number of networks, each preferred where some candidate has it)."""
    candidates = [g for g in groups if is_baseline(g) and g.dataset == group.dataset and (
        arch in g.networks if arch is not None else sorted(g.networks) == sorted(group.networks))]
    for key in _RECIPE_KEYS:
        narrowed = [g for g in candidates if g.config.get(key) == group.config.get(key)]
        candidates = narrowed or candidates
    narrowed = [g for g in candidates if len(g.networks) == len(group.networks)]  # then the same number of networks
    return narrowed or candidates


def _arch_accuracy(run, arch):
    accs = [a for a, name in zip(run.net_accuracies(), run.networks) if name == arch and a is not None]
    return statistics.fmean(accs) if accs else None


def independent_accuracy(groups, group, arch):
    """Mean ± std over the baseline independent runs' students of architecture `arch` (each run's mean over them)."""
    return _stats([_arch_accuracy(run, arch) for g in baseline_groups(groups, group, arch) for run in g.runs])


def _baseline_by_seed(groups, value):
    values = {}
    for g in groups:
        for seed, v in g.by_seed(value).items():
            values.setdefault(seed, []).append(v)
    return {seed: statistics.fmean(vs) for seed, vs in values.items()}


def paired_to_independent(groups, group, confidence=0.95):
    """The paired differences of `group` to independent training, seed by seed (`stats.paired_difference`).

    Returns:
        `{"avg": ..., "ensemble": ...}`: Avg, the mean of the Net accuracies of a seed, minus the same seed's
        independent accuracy of each Net's architecture averaged over the Nets; Ens, the ensemble accuracy of a seed
        minus that of the same seed's independent run of the same networks. Each also holds `baseline_runs`, the
        independent run directories it compares with; an independent row reads `reason: "baseline"`.
    """
    if is_baseline(group):
        return {key: {**paired_difference({}, {}, confidence), "reason": "baseline", "baseline_runs": []}
                for key in ("avg", "ensemble")}
    archs = list(dict.fromkeys(group.networks))
    chosen = {arch: baseline_groups(groups, group, arch) for arch in archs}
    baseline, runs = None, []
    if all(chosen.values()):
        per_arch = {arch: _baseline_by_seed(gs, lambda r, a=arch: _arch_accuracy(r, a)) for arch, gs in chosen.items()}
        seeds = set.intersection(*(set(v) for v in per_arch.values()))
        baseline = {s: statistics.fmean(per_arch[a][s] for a in group.networks) for s in seeds}
        runs = sorted({r.path for gs in chosen.values() for g in gs for r in g.runs})
    avg = {**paired_difference(group.by_seed(Run.average_accuracy), baseline, confidence), "baseline_runs": runs}
    same_networks = baseline_groups(groups, group)
    ensemble_baseline = _baseline_by_seed(same_networks, Run.ensemble_accuracy) if same_networks else None
    ensemble = {**paired_difference(group.by_seed(Run.ensemble_accuracy), ensemble_baseline, confidence),
                "baseline_runs": sorted(r.path for g in same_networks for r in g.runs)}
    return {"avg": avg, "ensemble": ensemble}


def _paired_cell(paired):
    reason = paired["reason"]
    if reason == "baseline":
        return "baseline"
    if reason == "no baseline":
        return "no independent run"
    if reason == "no shared seed":
        return "no shared seed"
    mean = f"{100 * paired['mean']:+.2f}"
    if paired["interval"] is None:
        return f"{mean} (n={paired['n']}, no interval)"
    low, high = paired["interval"]
    return f"{mean} [{100 * low:+.2f}, {100 * high:+.2f}] n={paired['n']}"


def _verdict_line(rows, pairs, key, what):
    """One sentence: which rows' intervals lie above zero, below zero, or hold it; which have none, and why."""
    verdicts = {BETTER: [], WORSE: [], UNDISTINGUISHED: []}
    missing = []
    for g in rows:
        p = pairs[id(g)][key]
        if p["reason"] == "baseline":
            continue
        if p["verdict"]:
            verdicts[p["verdict"]].append(f"{g.label} ({_paired_cell(p)})")
        else:
            missing.append(f"{g.label} (n=1: {100 * p['mean']:+.2f})" if p["reason"] == "n=1" else
                           f"{g.label} ({_paired_cell(p)})")
    why = {BETTER: "interval above zero", WORSE: "interval below zero", UNDISTINGUISHED: "interval holds zero"}
    sentence = "; ".join(f"{name} ({why[name]}): {', '.join(labels)}" for name, labels in verdicts.items() if labels)
    if missing:
        sentence += ("; " if sentence else "") + "no interval: " + ", ".join(missing)
    return f"{what}: {sentence}." if sentence else ""


def _ind_cell(groups, group):
    archs = list(dict.fromkeys(group.networks))
    cells = [_cell(independent_accuracy(groups, group, arch)) for arch in archs]
    if all(c == "–" for c in cells):
        return "–"
    return " / ".join(cells)


def build_groups(runs):
    by_key = {}
    for run in runs:
        by_key.setdefault(_group_key(run.config), []).append(run)
    groups = [Group(rs) for rs in by_key.values()]
    groups.sort(key=lambda g: (g.paper, g.dataset, g.networks_label, _method_rank(g), g.label, g.config["epochs"]))
    return groups


def markdown_table(groups, pairs=None):
    """The Markdown tables (one per paper) of the groups, each followed by which rows' paired intervals lie above
    zero, below zero or hold it. `pairs`: `{id(group): paired_to_independent(...)}` (computed when None)."""
    pairs = pairs or {id(g): paired_to_independent(groups, g) for g in groups}
    lines = []
    papers = list(dict.fromkeys(g.paper for g in groups))
    for paper in papers:
        rows = [g for g in groups if g.paper == paper]
        width = max(len(g.networks) for g in rows)
        header = ["Dataset", "Networks", "Method", "Ind"] + [f"Net {i + 1}" for i in range(width)] + [
            "Ens", "Avg", "Train Avg", "Δ Avg vs Ind [95% CI]", "Δ Ens vs Ind [95% CI]", "Runs", "Epochs"]
        lines += [f"### {paper or 'Experiments'}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * 3 + "---:|" * (len(header) - 3)]
        for g in rows:
            nets = [_cell(s) for s in g.nets()] + [""] * (width - len(g.networks))
            cells = [g.dataset, g.networks_label, g.label, _ind_cell(groups, g), *nets, _cell(g.ensemble()),
                     _cell(g.average()), _cell(g.train_average()), _paired_cell(pairs[id(g)]["avg"]),
                     _paired_cell(pairs[id(g)]["ensemble"]),
                     str(len(g.runs)), g.epochs_cell()]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for key, what in (("avg", "Avg"), ("ensemble", "Ens")):
            line = _verdict_line(rows, pairs, key, f"{what} against independent training, paired by seed")
            lines += [line, ""] if line else []
    lines.append("Top-1 test accuracy (%) after the last epoch; mean ± sample standard deviation over the runs "
                 "(seeds) of a config. Ind: the same architecture trained alone (independent runs of separate "
                 "networks on the same dataset, closest recipe; an independent run of one multi-branch student is "
                 "a row compared with them, not a baseline). Ens: the ensemble of the students' averaged "
                 "predictions. Avg: mean of the Net columns. Train Avg: the peers' mean training accuracy in the last epoch (as fit logs it: on the "
                 "training batches, augmented if the pipeline augments, while the weights change). Δ Avg vs Ind: "
                 "the mean over the seeds a row shares with independent training of "
                 "(Avg - independent Avg) of that seed, in points, with its 95% Student-t interval "
                 "(n - 1 degrees of freedom) and n, the paired seeds; Δ Ens: the same for the ensemble against the "
                 "ensemble of independently trained networks of the same kind. A row with no independent run, no "
                 "shared seed, or one (n=1: no interval) says so.")
    return "\n".join(lines) + "\n"


def _slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "runs"


def plot_curves(groups, out_dir):
    """One PNG per (paper, dataset, networks): test loss and test accuracy per student and epoch; returns paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    sets = {}
    for g in groups:
        sets.setdefault((g.paper, g.dataset, g.networks_label, len(g.networks)), []).append(g)
    paths = []
    for (paper, dataset, networks, m), members in sets.items():
        fig, axes = plt.subplots(m, 2, figsize=(11, 3.0 * m + 0.6), squeeze=False)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for k, g in enumerate(members):
            color = colors[k % len(colors)]
            for i in range(m):
                for j, scale in enumerate((1.0, 100.0)):
                    curves = []
                    for r in g.runs:
                        metric = r.keys["ce"][i] if j == 0 else r.keys["accuracy"][i]
                        curves.append([(row["epoch"] + 1, row[metric] * scale) for row in r.history
                                       if isinstance(row.get(metric), float)])  # "NA": not validated that epoch
                    curves = [c for c in curves if c]
                    if not curves:
                        continue
                    length = min(len(c) for c in curves)
                    epochs = np.array([e for e, _ in curves[0][:length]])
                    values = np.array([[v for _, v in c[:length]] for c in curves])
                    ax = axes[i, j]
                    label = g.label + (" [teacher]" if j == 1 and g.runs[0].deploy == "teacher" else "") + (
                        f" ({len(curves)} seeds)" if len(curves) > 1 else "")
                    # markers while the points are few: a run of one epoch is one point, which a line alone hides
                    ax.plot(epochs, values.mean(axis=0), color=color, linewidth=1.4, label=label,
                            marker="o" if length <= 30 else None, markersize=3)
                    if len(curves) > 1:
                        ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=color, alpha=0.15,
                                        linewidth=0)
        names = members[0].networks
        for i in range(m):
            net = f"Net {i + 1} ({'branch ' + str(i) + ' of ' if members[0].runs[0].branched else ''}{names[i]})"
            axes[i, 0].set_ylabel("test loss (cross-entropy)")
            axes[i, 1].set_ylabel("test accuracy (%)")
            for j in range(2):
                axes[i, j].set_title(f"{net}: {'test loss' if j == 0 else 'test accuracy'}", fontsize=10)
                axes[i, j].grid(alpha=0.3)
        for ax in axes.flat:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for j in range(2):
            axes[-1, j].set_xlabel("epoch")
        axes[0, 1].legend(fontsize=8, loc="lower right")
        fig.suptitle(f"{paper + ': ' if paper else ''}{dataset}, {networks}", fontsize=12)
        fig.tight_layout()
        path = os.path.join(out_dir, f"curves_{_slug(paper)}_{_slug(dataset)}_{_slug(networks)}.png")
        atomic_save(lambda temporary: fig.savefig(temporary, dpi=110, format="png"), path)
        plt.close(fig)
        paths.append(path)
    return paths


def default_out_dir(paths):
    """`<common parent of the run paths>/report`."""
    common = os.path.commonpath([os.path.abspath(p) for p in paths])
    return os.path.join(common, "report")


def _seed_problems(groups):
    """Runs that the paired differences cannot pair as they are: no known seed, or one seed in several runs."""
    problems = []
    for g in groups:
        by_seed = {}
        for r in g.runs:
            if r.seed is None:
                problems.append(f"{r.path}: its seed is unknown (results.json and config.yaml's seeds name none), so "
                                "the paired differences leave it out")
            else:
                by_seed.setdefault(r.seed, []).append(r.path)
        problems += [f"seed {seed} appears in {len(paths)} runs of {g.label} ({', '.join(paths)}): the paired "
                     "differences use their mean" for seed, paths in by_seed.items() if len(paths) > 1]
    return problems


def make_report(paths, out_dir=None, import_plugins=False):
    """Write `report.md`, `report.json` and the curve PNGs for the runs at or below `paths`.

    Args:
        paths: run directories, or directories holding run directories (searched recursively).
        out_dir: output directory (default `<common parent of paths>/report`).
        import_plugins: import the runs' plugins (`imports:` of their `config.yaml`; this runs their code) and check
            their configs in full; by default a report imports none (it needs only names and numbers).

    Returns:
        `{"markdown": path, "json": path, "plots": [paths], "runs": number of runs reported, "table": Markdown,
        "problems": [what was damaged or left out, and why]}`. When `out_dir` cannot be written (a full or read-only
        disk), `markdown` and `json` are None, `plots` lists what was written, and a problem says so: the table is
        still returned (the runs are only read, so a run directory on a read-only disk reports with another
        `out_dir`).

    Raises:
        NoRunsError: a path is not a directory, or no run under the paths has a complete epoch (the message lists
            why each run was left out).
        OutDirectoryError: `out_dir` exists and is not a directory.

    Example:

    ```python
    report = keras_okd.experiments.make_report(["runs/digits_simple_cnn"])   # every method and seed below it
    print(report["table"])      # the papers' layout: each network, the ensemble, paired differences to `independent`
    report["markdown"], report["plots"], report["problems"]
    ```
    """
    paths = [str(p) for p in paths]
    if out_dir is not None and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutDirectoryError(f"{out_dir} is a file, not a directory: pass --out DIR, a directory to write the "
                                "report into (created if needed).")
    runs, problems = runs_from(paths, import_plugins)
    groups = build_groups(runs)
    problems += _seed_problems(groups)
    out_dir = out_dir or default_out_dir(paths)
    pairs = {id(g): paired_to_independent(groups, g) for g in groups}
    table = markdown_table(groups, pairs)
    plots = []
    try:
        os.makedirs(out_dir, exist_ok=True)
        plots = plot_curves(groups, out_dir)
        return _write_report(out_dir, groups, pairs, table, plots, runs, problems)
    except OSError as error:
        if disk_errno(error) is None:
            raise
        what = str(error) if isinstance(error, DiskError) else f"cannot write {error.filename}: {error.strerror}"
        problems.append(f"{what}: the report is not saved in {out_dir}. The "
                        "table is printed; the runs were only read. Pass --out DIR on a disk that can be written.")
        return {"markdown": None, "json": None, "plots": plots, "runs": len(runs), "table": table,
                "problems": problems}


def _write_report(out_dir, groups, pairs, table, plots, runs, problems):
    """`report.md` and `report.json` of `make_report`; its return value."""
    markdown = "# keras-okd report\n\n" + table + "\n"
    markdown += "".join(f"![{os.path.basename(path)}]({os.path.basename(path)})\n\n" for path in plots)
    markdown += "Runs:\n\n" + "".join(f"- {os.path.relpath(r.path, out_dir)}\n" for r in runs)
    if problems:
        markdown += "\nProblems found (those runs are left out or partly read):\n\n" + "".join(
            f"- {p}\n" for p in problems)
    atomic_write(os.path.join(out_dir, "report.md"), markdown)
    summary = [
        {
            "paper": g.paper, "dataset": g.dataset, "networks": list(g.networks), "method": g.label,
            "runs": [r.path for r in g.runs],
            "net_accuracy": [[r.net_accuracies()[i] for r in g.runs] for i in range(len(g.networks))],
            "ensemble_accuracy": [r.ensemble_accuracy() for r in g.runs],
            "seeds": [r.seed for r in g.runs],
            "paired_avg": pairs[id(g)]["avg"],
            "paired_ensemble": pairs[id(g)]["ensemble"],
            "deploy": [r.deploy for r in g.runs],
            "epochs": [r.epochs_done for r in g.runs],
        }
        for g in groups
    ]
    atomic_json(os.path.join(out_dir, "report.json"), summary)
    return {"markdown": os.path.join(out_dir, "report.md"), "json": os.path.join(out_dir, "report.json"),
            "plots": plots, "runs": len(runs), "table": table, "problems": problems}
