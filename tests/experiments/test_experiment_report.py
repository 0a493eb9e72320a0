"""keras-okd report on run directories written here (config.yaml + history.csv, no training): the table's numbers
come from the histories, seeds are averaged, Ind comes from the independent runs, the paired differences to
independent training and their Student-t intervals match numpy, and one PNG per setting."""

import csv
import json
import os
import statistics

import numpy as np
import pytest

from keras_okd import cli
from keras_okd.experiments import config_from_dict, dump_config, make_report
from keras_okd.experiments.stats import paired_difference, t_quantile

BASE = {
    "experiment": "fake_digits",
    "paper": "Fake paper",
    "students": ["simple_cnn", "simple_cnn"],
    "dataset": {"name": "digits"},
    "optimizer": {"name": "sgd", "learning_rate": 0.1},
    "epochs": 3,
}


def fake_run(path, method, seed, accuracies, ensemble, students=None, epochs=3, params=None, teacher=None):
    """A run directory whose history ends with the given accuracies (earlier epochs lower)."""
    os.makedirs(path)
    config = config_from_dict({**BASE, "method": {"name": method, "params": params or {}},
                               "students": students or BASE["students"], "seeds": [seed]},
                              check_params=False)  # as the report reads them: the fake students are never built
    dump_config(config, os.path.join(path, "config.yaml"))
    peer = "branch" if isinstance(config["students"], dict) else "student"
    rows = []
    for epoch in range(epochs):
        scale = (epoch + 1) / 3
        row = {"epoch": epoch, "val_ensemble_accuracy": ensemble * scale, "val_loss": 1.0 / scale}
        for i, acc in enumerate(accuracies):
            row[f"val_{peer}_{i}_accuracy"] = acc * scale
            row[f"val_{peer}_{i}_ce"] = 2.0 - acc * scale
        if teacher:
            for i, acc in enumerate(teacher):
                row[f"val_teacher_{i}_accuracy"] = acc * scale
            row["val_teacher_ensemble_accuracy"] = max(teacher) * scale
        rows.append(row)
    with open(os.path.join(path, "history.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    fake_run(root / "tsb" / "seed_0", "tsb", 0, [0.90, 0.92], 0.95)
    fake_run(root / "tsb" / "seed_1", "tsb", 1, [0.94, 0.92], 0.97)
    fake_run(root / "independent" / "seed_0", "independent", 0, [0.80, 0.84], 0.86)
    fake_run(root / "ablation" / "seed_0", "tsb", 0, [0.70, 0.72], 0.75, params={"spatial": False}, epochs=2)
    fake_run(root / "dkel" / "seed_0", "dkel", 0, [0.5, 0.5, 0.5], 0.5, students={"model": "simple_cnn"},
             params={"views": "standard"}, teacher=[0.60, 0.63, 0.66])
    (root / "tsb" / "seed_0" / "backup").mkdir()  # not a run
    fake_run(root / "tsb" / "seed_0" / ".worker1", "tsb", 0, [0.1, 0.1], 0.1)  # process 1's copy: not counted
    return root


def test_report_table_holds_the_histories_numbers(runs, tmp_path):
    report = make_report([runs], tmp_path / "out")
    text = open(report["markdown"]).read()
    assert report["runs"] == 5
    lines = {line.split(" | ")[2]: line for line in text.splitlines() if line.startswith("| digits")}
    tsb = lines["tsb"]
    mean = statistics.fmean([0.90, 0.94])
    std = statistics.stdev([0.90, 0.94])
    assert f"{100 * mean:.2f} ± {100 * std:.2f}" in tsb  # Net 1 over two seeds
    assert "92.00 ± 0.00" in tsb  # Net 2
    assert f"{100 * statistics.fmean([0.95, 0.97]):.2f} ±" in tsb  # Ens
    avg = statistics.stdev([0.91, 0.93])
    assert f"{100 * 0.92:.2f} ± {100 * avg:.2f}" in tsb  # Avg: mean of the Net columns, per run
    assert "| 82.00 |" in tsb  # Ind: the independent students of the same architecture, averaged
    assert tsb.rstrip().endswith("| 2 | 3 |")  # runs, epochs
    assert "tsb (spatial=False)" in lines and lines["tsb (spatial=False)"].rstrip().endswith("| 1 | 2/3 |")
    dkel = lines["dkel (views=standard)"]
    assert "| 60.00 | 63.00 | 66.00 | 66.00 | 63.00 |" in dkel  # the deployed teacher's numbers
    assert "### Fake paper" in text and "Net 3" in text
    summary = json.load(open(report["json"]))
    assert {g["method"] for g in summary} == {"independent", "tsb", "tsb (spatial=False)", "dkel (views=standard)"}


def test_report_writes_one_png_per_setting(runs, tmp_path):
    report = make_report([runs / "tsb", runs / "independent", runs / "dkel"], tmp_path / "out")
    assert len(report["plots"]) == 2  # two students, and the 3-branch student
    for path in report["plots"]:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(path) > 10_000


def test_report_cli_prints_where_it_wrote(runs, capsys):
    assert cli.main(["report", str(runs / "tsb"), str(runs / "independent")]) == 0
    out = capsys.readouterr().out
    default = runs / "report"
    assert f"{default / 'report.md'}" in out and ".png" in out and "| digits |" in out
    assert (default / "report.md").exists()


def test_report_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="No run directories"):
        make_report([tmp_path])
    with pytest.raises(FileNotFoundError, match="not a directory"):
        make_report([tmp_path / "missing"])


def test_table4_rows_read_as_the_paper_names_them(tmp_path):
    """DML with feature-level knowledge is labelled as TSB Table 4's rows, in the table's order after DML."""
    root = tmp_path / "runs"
    rows = [("tsb", {}), ("dml", {"features": "pkt"}), ("dml", {"features": "at"}), ("dml", {}),
            ("dml", {"features": [{"crd": {"num_negatives": 64}}], "temperature": 4.0}), ("dml", {"features": "fitnet"}),
            ("independent", {})]
    for k, (method, params) in enumerate(rows):
        fake_run(root / f"row{k}" / "seed_0", method, 0, [0.5 + k / 100, 0.5], 0.6, params=params)
    text = open(make_report([root], tmp_path / "out")["markdown"]).read()
    labels = [line.split(" | ")[2] for line in text.splitlines() if line.startswith("| digits")]
    assert labels == ["independent", "dml", "FitNet (on DML)", "AT (on DML)", "CRD (on DML, temperature=4.0)",
                      "PKT (on DML)", "tsb"]


# Student-t quantiles t_p(df) from published tables (R's qt, scipy.stats.t.ppf), to 1e-9.
T_TABLE = [(0.975, 1, 12.706204736174694), (0.975, 2, 4.302652729749462), (0.975, 4, 2.7764451051977934),
           (0.975, 10, 2.228138851986274), (0.975, 30, 2.0422724563012378), (0.975, 31, 2.039513446396408),
           (0.975, 100, 1.9839715185235518), (0.995, 5, 4.032142983555228), (0.95, 3, 2.3533634348018233)]


@pytest.mark.parametrize("p, df, expected", T_TABLE)
def test_t_quantile_matches_the_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, rel=1e-9)


def test_t_quantile_and_paired_difference_refuse_bad_input():
    for df in (0, -1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="df must be a positive integer"):
            t_quantile(0.975, df)
    for p in (1.0, 0.4, 1.5):
        with pytest.raises(ValueError, match=r"p must be in \[0.5, 1\)"):
            t_quantile(p, 4)
    with pytest.raises(ValueError, match="confidence must be in"):
        paired_difference({0: 1.0}, {0: 0.5}, confidence=95)


def _interval(differences, t):
    d = np.asarray(differences, dtype=np.float64)
    half = t * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


IND = {0: ([0.80, 0.84], 0.86), 1: ([0.82, 0.81], 0.85), 2: ([0.79, 0.83], 0.84), 3: ([0.85, 0.80], 0.87),
       4: ([0.81, 0.82], 0.83)}


def _rows(text):
    return {line.split(" | ")[2]: line.split(" | ") for line in text.splitlines() if line.startswith("| digits")}


def test_paired_difference_to_independent_matches_numpy(tmp_path):
    """5 shared seeds: mean of (Avg - independent Avg) per seed, +- t_{0.975}(4) s / sqrt(5), for Avg and Ens; a
    better method's interval lies above zero and a worse one's below, and the text says which."""
    root = tmp_path / "runs"
    better = {0: ([0.84, 0.86], 0.90), 1: ([0.85, 0.84], 0.88), 2: ([0.83, 0.86], 0.89), 3: ([0.88, 0.83], 0.90),
              4: ([0.83, 0.85], 0.86)}
    worse = {seed: ([a - 0.05 - 0.01 * seed, b - 0.04], e - 0.03 * (seed % 2) - 0.02) for seed, ((a, b), e) in
             IND.items()}
    for method, table in (("independent", IND), ("tsb", better), ("dml", worse)):
        for seed, (accs, ens) in table.items():
            fake_run(root / method / f"seed_{seed}", method, seed, accs, ens)
    report = make_report([root], tmp_path / "out")
    summary = {g["method"]: g for g in json.load(open(report["json"]))}
    rows = _rows(report["table"])
    t4 = 2.776445105
    for method, table, verdict in (("tsb", better, "better"), ("dml", worse, "worse")):
        avg = [np.mean(table[s][0]) - np.mean(IND[s][0]) for s in range(5)]
        ens = [table[s][1] - IND[s][1] for s in range(5)]
        for key, differences, column in (("paired_avg", avg, -4), ("paired_ensemble", ens, -3)):
            paired = summary[method][key]
            mean, low, high = _interval(differences, t4)
            assert paired["seeds"] == [0, 1, 2, 3, 4] and paired["n"] == 5
            assert paired["t"] == pytest.approx(t4, rel=1e-9)
            assert paired["mean"] == pytest.approx(mean, abs=1e-12)
            assert paired["interval"] == pytest.approx([low, high], abs=1e-9)
            assert paired["verdict"] == verdict and (low > 0 if verdict == "better" else high < 0)
            assert rows[method][column] == f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}] n=5"
            assert len(summary["independent"]["runs"]) == 5 and len(paired["baseline_runs"]) == 5
    assert rows["independent"][-4] == rows["independent"][-3] == "baseline"
    assert summary["independent"]["paired_avg"]["reason"] == "baseline"
    assert "better (interval above zero): tsb (" in report["table"]
    assert "worse (interval below zero): dml (" in report["table"]
    assert summary["tsb"]["seeds"] == [0, 1, 2, 3, 4]


def test_independent_branches_are_a_row_compared_with_separate_networks_never_a_baseline(tmp_path):
    """An independent run of one 3-branch student (CE only) is paired with the separate networks' independent runs
    (Avg); it is no baseline of the branch methods, whose Avg still pairs with the separate networks, and whose Ens,
    with no independent run of 3 separate networks, has none."""
    root = tmp_path / "runs"
    branches = {"model": "simple_cnn", "branches": 3}
    shared = {0: [0.86, 0.85, 0.87], 1: [0.84, 0.86, 0.85], 2: [0.83, 0.84, 0.82]}
    one = {0: [0.88, 0.86, 0.87], 1: [0.85, 0.85, 0.88], 2: [0.86, 0.84, 0.85]}
    for seed in range(3):
        fake_run(root / "independent" / f"seed_{seed}", "independent", seed, *IND[seed])
        fake_run(root / "independent_branches" / f"seed_{seed}", "independent", seed, shared[seed], 0.9,
                 students=branches)
        fake_run(root / "one" / f"seed_{seed}", "one", seed, one[seed], 0.9, students=branches)
    report = make_report([root], tmp_path / "out")
    summary = {(g["method"], len(g["networks"])): g for g in json.load(open(report["json"]))}
    t2 = 4.302652730
    for method, table in (("independent", shared), ("one", one)):
        paired = summary[(method, 3)]["paired_avg"]
        mean, low, high = _interval([np.mean(table[s]) - np.mean(IND[s][0]) for s in range(3)], t2)
        assert paired["n"] == 3 and paired["mean"] == pytest.approx(mean, abs=1e-12)
        assert paired["interval"] == pytest.approx([low, high], abs=1e-9)
        assert len(paired["baseline_runs"]) == 3 and all(
            os.path.basename(os.path.dirname(r)) == "independent" for r in paired["baseline_runs"])
        assert summary[(method, 3)]["paired_ensemble"]["reason"] == "no baseline"
    assert summary[("independent", 2)]["paired_avg"]["reason"] == "baseline"


def test_a_row_of_another_experiment_pairs_with_independent_runs_of_as_many_networks(tmp_path):
    """Independent runs of 2 and of 3 simple_cnn, each of its own experiment, and an ablation of 2 of a third: the
    ablation's Ind and Avg pair with the 2-network runs only (the recipe does not tell them apart)."""
    root = tmp_path / "runs"
    three = {s: ([a, b, 0.9], e) for s, ((a, b), e) in IND.items()}
    ablation = {s: ([a + 0.01, b + 0.02], e) for s, ((a, b), e) in IND.items()}
    for seed in range(5):
        fake_run(root / "two" / f"seed_{seed}", "independent", seed, *IND[seed])
        fake_run(root / "three" / f"seed_{seed}", "independent", seed, *three[seed], students=["simple_cnn"] * 3)
        fake_run(root / "ablation" / f"seed_{seed}", "tsb", seed, *ablation[seed], params={"temporal": False})
    for folder, experiment in (("three", "three_students"), ("ablation", "ablation")):
        for seed in range(5):
            path = root / folder / f"seed_{seed}" / "config.yaml"
            path.write_text(path.read_text().replace("experiment: fake_digits", f"experiment: {experiment}"))
    report = make_report([root], tmp_path / "out")
    tsb = [g for g in json.load(open(report["json"])) if g["method"].startswith("tsb")][0]
    assert tsb["paired_avg"]["mean"] == pytest.approx(0.015, abs=1e-12)
    assert sorted(os.path.basename(os.path.dirname(r)) for r in tsb["paired_avg"]["baseline_runs"]) == ["two"] * 5


def test_paired_difference_pairs_only_shared_seeds(tmp_path):
    """Independent seeds 0-3, the method's 2-5: seeds 2 and 3 are paired (df = 1); the interval holds zero here."""
    root = tmp_path / "runs"
    for seed in range(4):
        fake_run(root / "independent" / f"seed_{seed}", "independent", seed, *IND[seed])
    method = {2: ([0.81, 0.85], 0.86), 3: ([0.84, 0.80], 0.88), 4: ([0.99, 0.99], 0.99), 5: ([0.10, 0.10], 0.10)}
    for seed, (accs, ens) in method.items():
        fake_run(root / "dml" / f"seed_{seed}", "dml", seed, accs, ens)
    report = make_report([root], tmp_path / "out")
    paired = {g["method"]: g for g in json.load(open(report["json"]))}["dml"]["paired_avg"]
    differences = [np.mean(method[s][0]) - np.mean(IND[s][0]) for s in (2, 3)]
    mean, low, high = _interval(differences, 12.706204736)
    assert paired["seeds"] == [2, 3] and paired["n"] == 2
    assert paired["differences"] == pytest.approx(differences, abs=1e-12)
    assert paired["interval"] == pytest.approx([low, high], abs=1e-8)
    assert paired["verdict"] == "not distinguishable"
    assert "not distinguishable (interval holds zero): dml (" in report["table"]


def test_rows_without_an_interval_say_why(tmp_path):
    """n=1 gives the difference and no interval; no shared seed, and no independent run, say so instead of a number;
    the 3-branch row has an Avg baseline (the same architecture alone) but no ensemble of 3 independent networks."""
    root = tmp_path / "runs"
    fake_run(root / "independent" / "seed_0", "independent", 0, *IND[0])
    fake_run(root / "independent" / "seed_1", "independent", 1, *IND[1])
    fake_run(root / "dml" / "seed_0", "dml", 0, [0.90, 0.88], 0.91)
    fake_run(root / "tsb" / "seed_7", "tsb", 7, [0.90, 0.88], 0.91)
    fake_run(root / "one" / "seed_0", "one", 0, [0.70, 0.72, 0.74], 0.75, students={"model": "simple_cnn"})
    fake_run(root / "one" / "seed_1", "one", 1, [0.70, 0.72, 0.77], 0.76, students={"model": "simple_cnn"})
    fake_run(root / "other" / "seed_0", "kdcl", 0, [0.5, 0.5], 0.5, students=["resnet20", "resnet20"])
    report = make_report([root], tmp_path / "out")
    rows = _rows(report["table"])
    summary = {g["method"]: g for g in json.load(open(report["json"]))}
    dml = summary["dml"]["paired_avg"]
    assert dml["n"] == 1 and dml["interval"] is None and dml["verdict"] is None and dml["reason"] == "n=1"
    assert dml["mean"] == pytest.approx(0.89 - 0.82, abs=1e-12)
    assert rows["dml"][-4] == "+7.00 (n=1, no interval)"
    assert rows["tsb"][-4] == "no shared seed" and summary["tsb"]["paired_avg"]["mean"] is None
    assert summary["tsb"]["paired_avg"]["reason"] == "no shared seed"
    one = summary["one"]
    assert one["paired_avg"]["n"] == 2 and one["paired_avg"]["differences"] == pytest.approx(
        [0.72 - 0.82, 0.73 - 0.815], abs=1e-12)
    assert one["paired_ensemble"]["reason"] == "no baseline" and rows["one"][-3] == "no independent run"
    other = summary["kdcl"]  # no independent resnet20
    assert other["paired_avg"]["reason"] == "no baseline" and other["paired_avg"]["mean"] is None
    assert _rows(report["table"])["kdcl"][-4] == "no independent run"
    assert "no interval: " in report["table"] and "dml (n=1: +7.00)" in report["table"]
    assert "tsb (no shared seed)" in report["table"] and "kdcl (no independent run)" in report["table"]


def test_runs_sharing_a_seed_are_averaged_and_noted(tmp_path):
    """Two copies of one config's seed 0 (e.g. two roots given): their mean is paired, and the report says so; a run's
    seed comes from results.json when it has one."""
    root = tmp_path / "runs"
    for seed in (0, 1):
        fake_run(root / "a" / "independent" / f"seed_{seed}", "independent", seed, *IND[seed])
    fake_run(root / "a" / "dml" / "seed_0", "dml", 0, [0.90, 0.88], 0.91)
    fake_run(root / "b" / "dml" / "seed_0", "dml", 0, [0.86, 0.84], 0.89)
    fake_run(root / "a" / "dml" / "seed_1", "dml", 1, [0.83, 0.83], 0.86)
    hand_made = config_from_dict({**BASE, "method": {"name": "dml", "params": {}}, "seeds": [1, 5]}, check_params=False)
    dump_config(hand_made, root / "a" / "dml" / "seed_1" / "config.yaml")  # two seeds: results.json says which
    (root / "a" / "dml" / "seed_1" / "results.json").write_text(json.dumps({"seed": 1, "epochs": 3}))
    report = make_report([root / "a", root / "b"], tmp_path / "out")
    dml = {g["method"]: g for g in json.load(open(report["json"]))}["dml"]
    assert sorted(dml["seeds"]) == [0, 0, 1]
    assert dml["paired_avg"]["differences"] == pytest.approx([0.87 - 0.82, 0.83 - 0.815], abs=1e-12)
    assert any(p.startswith("seed 0 appears in 2 runs of dml") for p in report["problems"])


@pytest.mark.parametrize("epochs, marker", [(1, "o"), (40, "None")])
def test_report_curves_mark_their_points_while_they_are_few(tmp_path, monkeypatch, epochs, marker):
    import matplotlib.pyplot as plt

    closed = []
    monkeypatch.setattr(plt, "close", closed.append)
    fake_run(tmp_path / "runs" / "tsb" / "seed_0", "tsb", 0, [0.7, 0.72], 0.75, epochs=epochs)
    make_report([str(tmp_path / "runs")], str(tmp_path / "out"))
    lines = [line for ax in closed[0].axes for line in ax.lines]
    assert len(lines) == 4 and {line.get_marker() for line in lines} == {marker}  # a one-epoch run is not blank
    assert all(len(line.get_xdata()) == epochs for line in lines)


def test_evaluate_scores_probabilities_as_numpy_does():
    from keras_okd.experiments import runner

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 7))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 7, size=50)
    score = runner._score(probabilities, labels)
    assert score["accuracy"] == np.mean(probabilities.argmax(axis=1) == labels)
    assert score["loss"] == pytest.approx(np.mean(-np.log(probabilities[np.arange(50), labels])), rel=1e-12)
    assert runner._score(np.eye(3)[[0, 1, 2]], np.array([0, 1, 1]))["loss"] == pytest.approx(
        -np.log(np.finfo("float64").eps) / 3)  # a zero probability: clipped, not infinite
