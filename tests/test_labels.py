import numpy as np
import pytest
import torch

from noisystudent.config import LabelConfig
from noisystudent.data import ImageSet
from noisystudent.labels import LabelStore, balance_classes, filter_by_confidence, pseudo_label, select, targets_for
from noisystudent.labels.store import shard_table
from noisystudent.models import build_model


class RecordingTeacher(torch.nn.Module):
    """A real (noisy) model that also records the mode and inputs it was called with."""

    def __init__(self):
        super().__init__()
        self.model = build_model("resnet_tiny_32", 10, 1, dropout=0.5, survival_prob=0.5)
        self.calls = []

    def forward(self, x):
        self.calls.append((self.training, x.detach().clone()))
        return self.model(x)


def make_pool(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.randint(0, 10, (n,), generator=g), [f"img-{i}" for i in range(n)], list("abcdefghij"))


def test_teacher_is_not_noised_when_labeling(tmp_path):
    pool = make_pool()
    teacher = RecordingTeacher()
    teacher.train()  # left in train mode by mistake: labeling must still run it in eval mode
    store = pseudo_label(teacher, pool, LabelConfig(batch_size=16, shard_size=25), tmp_path, torch.device("cpu"))
    assert teacher.calls and all(training is False for training, _ in teacher.calls)
    seen = torch.cat([x for _, x in teacher.calls])
    assert torch.equal(seen, pool.images.float() / 255), "teacher must see clean, un-augmented images"
    # and the stored labels equal a clean eval-mode prediction (dropout / drop-path off)
    teacher.model.eval()
    with torch.no_grad():
        expected = teacher.model(pool.images.float() / 255).softmax(1)
    probs = store.arrays()["probs"]
    assert np.allclose(probs, expected.numpy(), atol=1e-5)
    assert teacher.training, "the caller's mode is restored"


def test_store_is_sharded_and_resumes_per_shard(tmp_path):
    pool = make_pool(50)
    teacher = build_model("resnet_tiny_32", 10, 1)
    config = LabelConfig(batch_size=16, shard_size=20)
    store = pseudo_label(teacher, pool, config, tmp_path, torch.device("cpu"))
    assert [p.name for p in store.shard_paths()] == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    first = store.arrays()
    assert list(first["id"]) == pool.ids
    mtimes = {p: p.stat().st_mtime_ns for p in store.shard_paths()}
    pseudo_label(teacher, pool, config, tmp_path, torch.device("cpu"))
    assert {p: p.stat().st_mtime_ns for p in store.shard_paths()} == mtimes, "committed shards are not redone"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_temperature_scales_targets_but_not_confidence():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    for temperature in (0.5, 1.0, 2.0):
        table = shard_table(["a", "b"], logits, temperature)
        probs = np.array(table.column("probs").to_pylist())
        assert np.allclose(probs, (logits / temperature).softmax(1).numpy(), atol=1e-6)
        assert np.allclose(table.column("confidence").to_numpy(), logits.softmax(1).max(1).values.numpy())
        assert table.column("argmax").to_pylist() == [0, 2]
    sharp = np.array(shard_table(["a", "b"], logits, 0.5).column("probs").to_pylist())
    flat = np.array(shard_table(["a", "b"], logits, 2.0).column("probs").to_pylist())
    assert (sharp.max(1) > flat.max(1)).all()


def test_soft_and_hard_targets():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], dtype=np.float32)
    assert torch.allclose(targets_for(probs, "soft"), torch.from_numpy(probs))
    assert torch.equal(targets_for(probs, "hard"), torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))
    with pytest.raises(ValueError):
        targets_for(probs, "fuzzy")


def test_filter_drops_below_threshold_keeps_equal():
    confidence = np.array([0.29, 0.3, 0.31, 0.9])
    assert filter_by_confidence(confidence, 0.3).tolist() == [False, True, True, True]


def test_balance_duplicates_short_classes_and_keeps_most_confident_of_long():
    # class 0: 5 confident images; class 1: 2 confident + 1 below threshold; class 2: none at all
    argmax = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    confidence = np.array([0.5, 0.9, 0.7, 0.35, 0.8, 0.6, 0.95, 0.1])
    selection = select(argmax, confidence, num_classes=3, threshold=0.3, images_per_class=3)
    by_class = {c["class"]: c for c in selection.per_class}
    rows = selection.rows.tolist()
    assert rows[:3] == [1, 4, 2], "long class keeps its 3 most confident, most confident first"
    assert sorted(rows[3:]) == [5, 6, 6], "short class: all kept once, then the most confident again"
    assert by_class[0] == {"class": 0, "available": 5, "kept": 5, "dropped_low_confidence": 0,
                           "dropped_over_target": 2, "duplicated": 0, "selected": 3}
    assert by_class[1] == {"class": 1, "available": 3, "kept": 2, "dropped_low_confidence": 1,
                           "dropped_over_target": 0, "duplicated": 1, "selected": 3}
    assert by_class[2]["selected"] == 0 and by_class[2]["available"] == 0


def test_balance_default_target_is_mean_kept_count():
    argmax = np.array([0] * 6 + [1] * 2)
    confidence = np.full(8, 0.9)
    selection = balance_classes(argmax, confidence, np.ones(8, bool), 2, None)
    assert selection.images_per_class == 4
    assert [c["selected"] for c in selection.per_class] == [4, 4]
    assert selection.stats(8)["kept_fraction"] == 1.0
