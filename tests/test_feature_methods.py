"""Feature-level online KD end to end: `dml(features=...)` (TSB Table 4's rows) trains through the distiller on every
backend, its connectors and memories are the distiller's state (trained, saved, resumed, untouched by evaluate), and
exported students carry none of them."""

import keras
import numpy as np
import pytest
from conftest import straight_and_resumed, tiny_student, to_numpy

import keras_okd
from keras_okd import knowledge

N = 96  # training samples fed
N_MEMORY = 128  # CRD's memory is larger than what is fed: rows 96..127 are never visited
(X_ALL, Y_ALL), _ = keras_okd.data.digits_arrays()
X, Y = X_ALL[:N], Y_ALL[:N]
INDEXED = {"inputs": X, "index": np.arange(N)}

NAMES = ["fitnet", "at", "sp", "rkd", "pkt", "nst", "crd"]


def students():
    """Two plain functional students (conftest's tiny CNN: conv-BN-ReLU, flatten, dense), not from the zoo: the
    parts read them by their own (different) layer names, one list per peer."""
    return [tiny_student(name=f"s{i}") for i in range(2)]


def every_method(pair):
    """All seven methods at once, on each student's ReLU map (8x8x4) and flattened features (256)."""
    def named(kind):
        return [[next(layer.name for layer in s.layers if isinstance(layer, kind))] for s in pair]

    image, flat = named(keras.layers.ReLU), named(keras.layers.Flatten)
    assert image[0] != image[1]  # Keras's automatic names differ between the two students
    return [{"fitnet": {"layers": image}}, {"at": {"layers": image}}, {"sp": {"layers": image}},
            {"rkd": {"layers": flat}}, {"pkt": {"layers": flat}}, {"nst": {"layers": image}},
            {"crd": {"layers": flat, "num_negatives": 16, "embedding_dim": 8, "seed": 3}}]


def make(methods=None):
    keras.utils.set_random_seed(5)
    pair = students()
    features = every_method(pair) if methods is None else [m for m in every_method(pair) if list(m)[0] in methods]
    d = keras_okd.methods.dml(pair, features=features, num_train_samples=N_MEMORY)
    d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return d


def values(variables):
    return [to_numpy(v).copy() for v in variables]


@pytest.mark.heavy
def test_dml_with_every_feature_method_trains_end_to_end():
    d = make()
    assert [part.name for part in d.knowledge] == ["dml", *NAMES]
    crd = d.knowledge[-1]
    memory_before = to_numpy(crd.memory).copy()
    connectors_before = values([v for part in d.knowledge[1:] for v in part.trainable_variables])
    history = d.fit(INDEXED, Y, epochs=1, batch_size=32, verbose=0, shuffle=False).history

    for i in range(2):
        for name in ["ce", "dml", *NAMES]:
            value = history[f"student_{i}_{name}"][-1]
            assert np.isfinite(value), (i, name, value)
            if name != "ce":
                assert value > 0, (i, name)
    # The connectors (FitNet regressors, CRD embeddings) were trained with the students.
    connectors_after = values([v for part in d.knowledge[1:] for v in part.trainable_variables])
    assert len(connectors_after) == 2 * 3 + 2 * 2  # two regressors (kernel, gamma, beta), two embeddings
    assert all(not np.array_equal(a, b) for a, b in zip(connectors_before, connectors_after))
    # CRD wrote the rows it saw, and only those.
    memory = to_numpy(crd.memory)
    changed = np.nonzero(np.any(memory != memory_before, axis=(1, 2)))[0]
    np.testing.assert_array_equal(changed, np.arange(N))
    np.testing.assert_allclose(np.linalg.norm(memory[:N], axis=-1), 1.0, rtol=1e-5)  # momentum rows are normalised
    # Exported students are the plain networks: no connector, head or memory.
    part_variables = {id(v) for part in d.knowledge for v in part.variables}
    for student in d.students:
        assert student.count_params() == tiny_student().count_params()
        assert not any(id(v) in part_variables for v in student.variables)

    # Evaluation (data without indices) reports every term and changes nothing: memory, negative stream, regressors'
    # batch-norm statistics.
    before = values(d.variables)
    logs = d.evaluate(X_ALL[N : N + 64], Y_ALL[N : N + 64], batch_size=32, verbose=0, return_dict=True)
    assert all(np.isfinite(logs[f"student_{i}_{name}"]) for i in range(2) for name in NAMES)
    for a, b in zip(before, values(d.variables)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.heavy
def test_backup_and_restore_resumes_memory_regressors_and_negatives(tmp_path):
    """An interrupted fit resumed with BackupAndRestore ends where an uninterrupted one does: CRD's memory and
    negative stream, FitNet's regressors (with their batch-norm statistics) and the students."""
    def run(callbacks):
        d = make(["fitnet", "crd"])
        d.fit(INDEXED, Y, epochs=2, batch_size=48, verbose=0, shuffle=False, callbacks=callbacks)
        return d

    straight, resumed = straight_and_resumed(run, tmp_path / "backup", epoch=1, batch=0)
    crd_s, crd_r = straight.knowledge[-1], resumed.knowledge[-1]
    np.testing.assert_allclose(to_numpy(crd_r.memory), to_numpy(crd_s.memory), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(to_numpy(crd_r.seed_generator.state), to_numpy(crd_s.seed_generator.state))
    for a, b in zip(straight.variables, resumed.variables):
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=1e-4, atol=1e-5, err_msg=a.path)


def test_dml_features_spec():
    def parts(features, **kwargs):
        with keras.StatelessScope(initialize_variables=False):  # shapes only: nothing is trained here
            pair = [keras_okd.models.get("resnet20", num_classes=10) for _ in range(2)]
            return keras_okd.methods.dml(pair, features=features, **kwargs).knowledge

    assert [type(p) for p in parts(None)] == [knowledge.PeerDistillation]
    at = parts("at")[1]
    assert isinstance(at, knowledge.AttentionTransfer) and at.weight == 1000.0 and at.reduction == "mean"
    both = parts([{"sp": {"weight": 10.0, "layers": ["stage_2"]}}, knowledge.ProbabilisticKT(name="mine")],
                 reduction="sum")
    assert [(p.name, p.weight, p.reduction) for p in both] == [("dml", 1.0, "sum"), ("sp", 10.0, "sum"),
                                                              ("mine", 30000.0, "mean")]
    crd = parts("crd", num_train_samples=N)[1]
    assert crd.num_samples == N and crd.needs_index
    with pytest.raises(ValueError, match="num_train_samples"):
        parts("crd")
    with pytest.raises(ValueError, match="Unknown feature-distillation method 'attention'"):
        parts("attention")
    with pytest.raises(ValueError, match="must name feature methods"):
        parts([3])
    with pytest.raises(ValueError, match=r"features\['at'\] must be a dict"):
        parts({"at": 5})
    # A layer the students do not have is refused when the distiller is built, naming what they offer.
    with pytest.raises(ValueError, match="no layer named 'stage_4'"):
        parts({"at": {"layers": ["stage_4"]}})  # a CIFAR ResNet has three stages


def test_default_layers_follow_the_students_zoo_names():
    """Without `layers`, each method reads what CRD's benchmark code reads, found by the zoo's names: AT and NST
    every stage, SP the last, FitNet the second, RKD/PKT/CRD the pooled features; a multi-branch student's branch
    layers by path (and the distiller taps them)."""
    def layers(students, method):
        part = keras_okd.methods.dml(students, features=method, num_train_samples=N).knowledge[1]
        return [list(part.layers_for_peer(i)) for i in range(part.num_peers)]

    with keras.StatelessScope(initialize_variables=False):  # shapes only
        cifar = [keras_okd.models.get("resnet20") for _ in range(2)]
        assert layers(cifar, "at") == [["stage_1", "stage_2", "stage_3"]] * 2
        assert layers(cifar, "nst") == [["stage_1", "stage_2", "stage_3"]] * 2
        assert layers(cifar, "sp") == [["stage_3"]] * 2
        assert layers(cifar, "fitnet") == [["stage_2"]] * 2
        assert layers(cifar, "rkd") == layers(cifar, "pkt") == layers(cifar, "crd") == [["pool"]] * 2
        mixed = [keras_okd.models.get("resnet18_tiny", input_shape=(32, 32, 3)), keras_okd.models.get("resnet20")]
        assert layers(mixed, "at") == [["stage_1", "stage_2", "stage_3"]] * 2  # the stages both have
        assert layers([keras_okd.models.get("resnet18_tiny") for _ in range(2)], "sp") == [["stage_4"]] * 2
        branched = keras_okd.models.multi_branch("resnet20", num_branches=3)
        assert layers(branched, "at") == [[f"branch_{i}/b{i}_stage_3"] for i in range(3)]
        assert layers(branched, "pkt") == [[f"branch_{i}/b{i}_pool"] for i in range(3)]
        # Explicit layers win; plain models keep the part's own defaults (and the distiller names what they offer).
        assert layers(cifar, {"at": {"layers": ["stage_2"]}}) == [["stage_2"]] * 2
    with pytest.raises(ValueError, match="no layer named 'stage_1'"):
        keras_okd.methods.dml(students(), features="at")


def test_every_table4_row_builds_on_the_papers_networks():
    """TSB Table 4's networks (ResNet-32 and WRN-16-2 pairs, CIFAR-100) take every method with its defaults."""
    with keras.StatelessScope(initialize_variables=False):
        for net in ("resnet32", "wrn_16_2"):
            pair = [keras_okd.models.get(net, num_classes=100) for _ in range(2)]
            for method in knowledge.features.METHODS:
                d = keras_okd.methods.dml(pair, features=method, num_train_samples=50_000)
                part = d.knowledge[1]
                assert part.peer_feature_shapes[0] == part.peer_feature_shapes[1]
