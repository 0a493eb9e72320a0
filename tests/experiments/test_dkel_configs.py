"""DKEL configs: Table 3 rows differ from the Baseline in exactly their named component; the compared methods' files
share the DKEL rows' recipe."""

import math
import os

import pytest

import keras_okd
from keras_okd.distiller.callbacks import KnowledgeSchedule
from keras_okd.experiments import load_config
from keras_okd.experiments.config import config_differences

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = {"baseline": (), "dk": ("decoupled",), "ek": ("decaying_ensemble",), "dk_ek": ("decoupled", "decaying_ensemble")}


def row(dataset, suffix):
    return load_config(os.path.join(ROOT, "configs", "dkel", "table3", f"{dataset}_resnet32_{suffix}.yaml"))


def describe(config):
    """What a row trains: its parts (type, name, weight, temperature, config), schedules, teacher settings."""
    student = keras_okd.models.multi_branch("simple_cnn", 3, num_classes=10, input_shape=(8, 8, 1),
                                            per_branch_inputs=True, width=2)
    params = {k: v for k, v in config["method"]["params"].items() if k != "views"}
    d = keras_okd.methods.get(config["method"]["name"])(student, **params)
    parts = {p.name: {k: v for k, v in p.get_config().items() if k not in ("name", "trainable", "dtype", "schedule")}
             for p in d.knowledge}  # a part's schedule is in "schedules" below
    schedule = KnowledgeSchedule(d.schedules)
    return {"parts": parts, "schedules": [schedule.values(e) for e in (0, 1, 5, 50, 100)],
            "teacher": (d.teacher_eta, d.teacher_init_steps, d.teacher_init_learning_rate, d.deploy)}


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_each_row_changes_only_its_named_component(dataset):
    base = row(dataset, "baseline")
    assert base["method"]["name"] == "dkel"
    for suffix, switched in ROWS.items():
        config = row(dataset, suffix)
        differences = config_differences(base, config)
        want = ["experiment"] * (suffix != "baseline") + [f"method.params.{k}" for k in switched]
        assert differences == want, (suffix, differences)
        for key in ("decoupled", "decaying_ensemble"):
            assert config["method"]["params"][key] is (key in switched)


@pytest.mark.heavy
def test_rows_build_the_ablation_they_name():
    rows = {suffix: describe(row("cifar100", suffix)) for suffix in ROWS}
    base = rows["baseline"]
    assert sorted(base["parts"]) == ["pe", "pm"] and base["schedules"] == [{}] * 5  # PCL's loss, constant weights
    assert base["teacher"][1] == 0  # the teacher starts as a copy of the student
    # + L_dk: the same terms, the teacher-peer term now from a decoupled teacher (CE-initialised), weight still 1
    dk = rows["dk"]
    assert dk["parts"] == {"pe": base["parts"]["pe"], "dk": base["parts"]["pm"]}
    assert dk["schedules"] == base["schedules"] and dk["teacher"][1] == 1 and dk["teacher"][0] == base["teacher"][0]
    # + L_ek: the Baseline's terms plus omega * ek, the teacher-peer term weighted 1 - omega; no decoupled start
    ek = rows["ek"]
    assert {k: v for k, v in ek["parts"].items() if k != "ek"} == base["parts"]
    assert ek["parts"]["ek"]["average"] == "logits" and ek["teacher"] == base["teacher"]
    for epoch, values in zip((0, 1, 5, 50, 100), ek["schedules"]):
        omega = pytest.approx(math.exp(-0.5 * epoch))
        assert values == {"ek": omega, "pm": pytest.approx(1 - math.exp(-0.5 * epoch))}
    # both: exactly the union of the two changes
    both = rows["dk_ek"]
    assert both["parts"] == {"pe": base["parts"]["pe"], "dk": base["parts"]["pm"], "ek": ek["parts"]["ek"]}
    assert both["teacher"] == dk["teacher"]
    assert both["schedules"] == [{"dk" if k == "pm" else k: v for k, v in s.items()} for s in ek["schedules"]]


def shipped(path):
    return load_config(os.path.join(ROOT, "configs", "dkel", path))


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("net", ["resnet32", "vgg16", "densenet_bc_40_12", "resnet110_bottleneck",
                                 "bottleneck_resnet_2x2x2_w512"])
def test_table1_cl_and_okddip_columns_share_the_dkel_row_recipe(dataset, net):
    row = shipped(f"table1/{dataset}_{net}.yaml")
    for method in ("cl", "okddip"):
        column = shipped(f"table1/{dataset}_{net}_{method}.yaml")
        assert column["method"]["name"] == method
        differences = config_differences(row, column)
        assert all(d.startswith("method") for d in differences if d not in (
            "dataset.augment", "students.per_branch_inputs")), differences
        assert column["dataset"]["augment"] == "standard" and column["students"]["per_branch_inputs"] is False
        assert column["students"]["branches"] == 3 and column["experiment"] == row["experiment"]


def test_table2_kd_and_okddip_rows():
    for net in ("resnet18_tiny", "resnet34_tiny"):
        row = shipped(f"table2/tinyimagenet_{net}.yaml")
        kd = shipped(f"table2/tinyimagenet_{net}_kd.yaml")
        assert kd["method"] == {"name": "kd", "params": {"teacher": None, "temperature": 4.0, "alpha": 0.9,
                                                         "views": None}}
        assert kd["students"] == [net, net] and kd["experiment"] == row["experiment"]
        for key in ("optimizer", "schedule", "epochs", "seeds"):
            assert kd[key] == row[key]
        okddip = shipped(f"table2/tinyimagenet_{net}_okddip.yaml")
        assert okddip["method"]["name"] == "okddip" and okddip["students"]["branches"] == 3
    with pytest.raises(ValueError, match="needs a pretrained teacher"):  # the config must be given one
        student = keras_okd.models.get("simple_cnn", input_shape=(8, 8, 1))
        keras_okd.methods.kd([student, student], **kd["method"]["params"])
