"""The results ledger (keras_okd.experiments.ledger): records of finished runs, the report read from them, the README
tables generated from them, and a rerun that reproduces a record."""

import json
import os

import keras
import pytest

from keras_okd import cli
from keras_okd.experiments import config_from_dict, dump_config, ledger, make_report, readme_tables, run_experiment
from keras_okd.experiments.config import with_seed

CONFIG = {"experiment": "ledger_unit", "paper": "ledger unit", "method": {"name": "dml"},
          "students": ["simple_cnn_8", "simple_cnn_8"], "dataset": {"name": "digits", "batch_size": 500},
          "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9},
          "schedule": {"type": "cosine", "warmup_epochs": 0.5}, "epochs": 1, "seeds": [0]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """DML and independent training (seed 0), each a finished run directory, and their ledger."""
    root = tmp_path_factory.mktemp("ledger")
    for method in ("dml", "independent"):
        config = config_from_dict({**CONFIG, "method": {"name": method}})
        run_experiment(config, root / "runs" / method / "seed_0", 0, verbose=0)
    assert cli.main(["ledger", "add", str(root / "runs"), "--ledger", str(root / "ledger"), "--tag", "unit"]) == 0
    return root


def _load(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.heavy
def test_a_record_holds_the_runs_numbers_and_the_report_reads_it_like_the_run(runs):
    records = ledger.find_records([runs / "ledger"])
    assert len(records) == 2 and all(os.path.dirname(p).endswith("unit") for p in records)
    run_dir = runs / "runs" / "dml" / "seed_0"
    record = ledger.read_record(next(p for p in records if "dml-" in p and "seed0" in p))
    results = _load(run_dir / "results.json")
    assert record["net_accuracy"] == [pytest.approx(a, rel=1e-5) for a in results["net_accuracy"]]
    assert record["ensemble_accuracy"] == pytest.approx(results["ensemble_accuracy"], rel=1e-5)
    assert (record["seed"], record["epochs"], record["backend"]) == (0, 1, keras.backend.backend())
    assert record["versions"]["keras"] == keras.__version__ and keras.backend.backend() in record["versions"]
    assert record["config"]["seeds"] == [0] and record["tag"] == "unit"
    assert [row["epoch"] for row in record["history"]] == [0]
    assert os.path.getsize(ledger.record_path(runs / "ledger", record)) < 16_000
    # the seeds of one setting share the hash; the other method does not
    other = ledger.read_record(next(p for p in records if "independent-" in p))
    assert ledger.config_hash(with_seed(record["config"], 3)) == record["config_hash"] != other["config_hash"]
    assert ledger.has_record(runs / "ledger", "unit", record["config"], keras.backend.backend())
    assert not ledger.has_record(runs / "ledger", "unit", with_seed(record["config"], 2), keras.backend.backend())
    # the same table, the same paired intervals, from the records as from the run directories
    from_runs = make_report([runs / "runs"], runs / "report_runs")["table"]
    from_records = make_report([runs / "ledger"], runs / "report_records")["table"]
    assert from_records == from_runs and "| dml |" in from_records and "(n=1, no interval)" in from_records


@pytest.mark.heavy
def test_readme_blocks_are_generated_from_the_records_and_checked(runs, capsys):
    readme = runs / "README.md"
    readme.write_text("# results\n\n<!-- ledger: ledger/unit -->\nstale\n<!-- /ledger -->\n\nend\n")
    assert cli.main(["ledger", "readme", str(readme), "--check"]) == 1
    assert "differs from its records" in capsys.readouterr().err
    assert cli.main(["ledger", "readme", str(readme)]) == 0
    text = readme.read_text()
    assert readme_tables.table([runs / "ledger" / "unit"]) in text and "stale" not in text and text.endswith("end\n")
    assert cli.main(["ledger", "readme", str(readme), "--check"]) == 0
    readme.write_text("<!-- ledger: ledger/none -->\nx\n<!-- /ledger -->\n")
    assert cli.main(["ledger", "readme", str(readme)]) == 2
    assert "names no ledger records" in capsys.readouterr().err


@pytest.mark.heavy
def test_a_rerun_reproduces_a_record_exactly_on_its_backend(runs, capsys):
    record = next(p for p in ledger.find_records([runs / "ledger"]) if "dml-" in p and "seed0" in p)
    assert cli.main(["ledger", "rerun", record]) == 0
    out = capsys.readouterr().out
    assert "reproduced within 0.0 points" in out and "(+0.00 points)" in out
    changed = runs / "changed.record.json"
    data = _load(record)
    data["net_accuracy"][0] += 0.01  # one point off
    changed.write_text(json.dumps(data))
    assert cli.main(["ledger", "rerun", str(changed), "--tolerance", "0.5"]) == 1
    assert "NOT reproduced within 0.5 points" in capsys.readouterr().out


def test_compare_and_the_errors_of_a_bad_record(tmp_path, capsys):
    a = {"net_accuracy": [0.8, 0.81], "ensemble_accuracy": 0.83}
    ok, lines = ledger.compare(a, {"net_accuracy": [0.803, 0.81], "ensemble_accuracy": 0.829}, tolerance=0.3)
    assert ok and lines[0] == "net 0: recorded 80.00, now 80.30 (+0.30 points)"
    assert not ledger.compare(a, {"net_accuracy": [0.805, 0.81], "ensemble_accuracy": 0.83}, tolerance=0.3)[0]
    bad = tmp_path / "x.record.json"
    bad.write_text(json.dumps({"ledger": 99}))
    with pytest.raises(ledger.LedgerError, match="not a keras-okd ledger record of format 1"):
        ledger.read_record(bad)
    other = "jax" if keras.backend.backend() != "jax" else "torch"
    bad.write_text(json.dumps({"ledger": 1, "config": {}, "seed": 0, "net_accuracy": [], "ensemble_accuracy": 0,
                               "history": [], "backend": other}))
    assert cli.main(["ledger", "rerun", str(bad)]) == 2
    assert f"ran on KERAS_BACKEND={other}" in capsys.readouterr().err
    unfinished = tmp_path / "runs" / "dml"
    unfinished.mkdir(parents=True)
    dump_config(config_from_dict(CONFIG), unfinished / "config.yaml")
    (unfinished / "history.csv").write_text("epoch,loss\n0,1.0\n")
    assert cli.main(["ledger", "add", str(tmp_path / "runs"), "--ledger", str(tmp_path / "ledger")]) == 1
    assert "has not finished (no results.json); not recorded" in capsys.readouterr().err
