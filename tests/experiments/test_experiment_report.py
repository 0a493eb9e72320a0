"""keras-okd report on run directories written here (config.yaml + history.csv, no training): the table's numbers
come from the histories, seeds are averaged, Ind comes from the independent runs, and one PNG per setting."""

import csv
import json
import os
import statistics

import pytest

from keras_okd import cli
from keras_okd.experiments import config_from_dict, dump_config, make_report

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
                               "students": students or BASE["students"], "seeds": [seed]})
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
