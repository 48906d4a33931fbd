import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from noisystudent.config import LabelConfig
from noisystudent.data import ImageSet, memory_pool
from noisystudent.errors import UserError
from noisystudent.labels import LabelStore, pseudo_label, read_selection, select_from_store
from noisystudent.labels.store import STORE_FORMAT, shard_name, shard_table, write_manifest
from noisystudent.models import build_model, predict_logits
from noisystudent.labels import dense_targets
from memory import peak_growth


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
    labels = torch.randint(0, 10, (n,), generator=g)
    return memory_pool(ImageSet(images, labels, [f"img-{i}" for i in range(n)], list("abcdefghij")), "test pool")


def dense(class_ids, probs, num_classes):
    return dense_targets(torch.as_tensor(class_ids), torch.as_tensor(probs), num_classes)


def make_store(root, argmax, confidence, shard_size, num_classes=None, scores=None):
    """A store with chosen argmax / confidence (and out-of-domain scores), written shard by shard."""
    root.mkdir(parents=True, exist_ok=True)
    argmax, confidence = np.asarray(argmax), np.asarray(confidence, dtype=np.float32)
    num_classes = num_classes or int(argmax.max()) + 1
    counts = []
    for index, start in enumerate(range(0, len(argmax), shard_size)):
        stop = min(len(argmax), start + shard_size)
        logits = torch.nn.functional.one_hot(torch.from_numpy(argmax[start:stop]).long(), num_classes).float()
        table = shard_table([f"u{i}" for i in range(start, stop)], logits, 1.0, min(num_classes, 3))
        table = table.set_column(2, "confidence", pa.array(confidence[start:stop]))
        if scores is not None:
            column = table.schema.get_field_index("ood_score")
            table = table.set_column(column, "ood_score", pa.array(np.asarray(scores, np.float32)[start:stop]))
        pq.write_table(table, root / shard_name(index))
        counts.append({"count": stop - start, "inputs": stop - start, "bad_files": []})
    write_manifest(root, {"format": STORE_FORMAT, "ood_score": "energy"}, counts)
    return LabelStore(root)


def multiplicities(path, n):
    rows, copies = read_selection(path)
    out = np.zeros(n, np.int64)
    out[rows] = copies
    return out


def reference_top_confidence(argmax, confidence, num_classes, threshold, target):
    """The paper's rule on the whole pool in memory: the oracle the streamed version must match."""
    out = np.zeros(len(argmax), np.int64)
    for c in range(num_classes):
        members = np.flatnonzero((argmax == c) & (confidence >= threshold))
        ordered = members[np.lexsort((members, -confidence[members].astype(np.float64)))]
        if len(ordered) >= target:
            out[ordered[:target]] = 1
        elif len(ordered):
            out[ordered] = target // len(ordered)
            out[ordered[:target % len(ordered)]] += 1
    return out


def test_teacher_is_not_noised_when_labeling(tmp_path):
    pool = make_pool()
    teacher = RecordingTeacher()
    teacher.train()  # left in train mode by mistake: labeling must still run it in eval mode
    store = pseudo_label(teacher, pool, LabelConfig(batch_size=16, shard_size=25), tmp_path, torch.device("cpu"))
    assert teacher.calls and all(training is False for training, _ in teacher.calls)
    seen = torch.cat([x for _, x in teacher.calls])
    clean = pool.images.images.float() / 255
    assert torch.equal(seen, clean), "teacher must see clean, un-augmented images"
    # and the stored labels equal a clean eval-mode prediction (dropout / drop-path off)
    teacher.model.eval()
    with torch.no_grad():
        expected = teacher.model(clean).softmax(1)
    assert torch.allclose(dense(*store.topk(np.arange(40), "soft"), 10), expected, atol=2e-3), "float16 storage"
    assert np.array_equal(store.column("argmax"), expected.argmax(1).numpy())
    assert teacher.training, "the caller's mode is restored"


def test_store_is_sharded_resumes_per_shard_and_refuses_another_teacher(tmp_path):
    pool = make_pool(50)
    teacher = build_model("resnet_tiny_32", 10, 1)
    config = LabelConfig(batch_size=16, shard_size=20)
    store = pseudo_label(teacher, pool, config, tmp_path, torch.device("cpu"), teacher_hash="abc")
    assert [p.name for p in store.shard_paths()] == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    assert list(store.column("id")) == pool.images.ids and len(store) == 50
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["teacher_sha256"] == "abc" and [s["count"] for s in manifest["shards"]] == [20, 20, 10]
    assert manifest["bad_files"] == 0 and manifest["inputs"] == 50
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    pseudo_label(teacher, pool, config, tmp_path, torch.device("cpu"), teacher_hash="abc")
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes, "a finished store is not redone"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    (tmp_path / "manifest.json").unlink()
    (tmp_path / "shard-00001.parquet").unlink()  # as if killed before shard 1 was committed
    with pytest.raises(UserError, match="another teacher"):
        pseudo_label(teacher, pool, config, tmp_path, torch.device("cpu"), teacher_hash="other")
    (tmp_path / ".shard-00001.parquet.k1ll3d.tmp").write_bytes(b"half a shard")  # left by a SIGKILL mid-write
    pseudo_label(teacher, pool, config, tmp_path, torch.device("cpu"), teacher_hash="abc")
    assert not list(tmp_path.glob(".*")) and (tmp_path / "manifest.json").is_file()


def test_temperature_scales_targets_but_not_confidence():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    for temperature in (0.5, 1.0, 2.0):
        table = shard_table(["a", "b"], logits, temperature, 3)
        ids = np.array(table.column("topk_ids").to_pylist())
        probs = np.array(table.column("topk_probs").to_pylist())
        assert torch.allclose(dense(ids, probs, 3), (logits / temperature).softmax(1), atol=1e-3)
        assert np.allclose(table.column("confidence").to_numpy(), logits.softmax(1).max(1).values.numpy())
        assert table.column("argmax").to_pylist() == [0, 2]
    sharp = shard_table(["a", "b"], logits, 0.5, 3).column("topk_probs").to_pylist()
    flat = shard_table(["a", "b"], logits, 2.0, 3).column("topk_probs").to_pylist()
    assert all(s[0] > f[0] for s, f in zip(sharp, flat))


def test_many_classes_store_top_k_in_float16_and_targets_renormalize(tmp_path):
    logits = torch.randn(30, 1000, generator=torch.Generator().manual_seed(0)) * 3
    table = shard_table([str(i) for i in range(30)], logits, 1.0, 10)
    assert table.schema.field("topk_probs").type == pa.list_(pa.float16(), 10)
    assert table.schema.field("topk_ids").type == pa.list_(pa.int32(), 10)
    ids = np.array(table.column("topk_ids").to_pylist())
    assert np.array_equal(ids, logits.topk(10).indices.numpy()) and np.array_equal(ids[:, 0], table.column("argmax").to_numpy())
    pq.write_table(table, tmp_path / shard_name(0))
    write_manifest(tmp_path, {}, [{"count": 30, "inputs": 30, "bad_files": []}])
    rows = np.array([29, 3, 17])  # any order
    class_ids, kept_probs = LabelStore(tmp_path).topk(rows, "soft")
    assert np.array_equal(class_ids, ids[rows])
    targets = dense(class_ids, kept_probs, 1000)
    assert torch.allclose(targets.sum(1), torch.ones(3)), "renormalized over the kept top-k"
    assert ((targets > 0).sum(1) == 10).all()
    kept = logits.softmax(1)[rows].gather(1, torch.from_numpy(ids[rows]).long())
    assert torch.allclose(targets.gather(1, torch.from_numpy(ids[rows]).long()), kept / kept.sum(1, keepdim=True),
                          atol=2e-3)


def test_hard_targets_are_one_hot_argmax(tmp_path):
    store = make_store(tmp_path, [2, 0, 1], [0.9, 0.5, 0.4], shard_size=2)
    assert torch.equal(dense(*store.topk(np.array([2, 0]), "hard"), 3), torch.tensor([[0, 1.0, 0], [0, 0, 1.0]]))


def test_top_confidence_duplicates_short_classes_and_keeps_most_confident_of_long(tmp_path):
    # class 0: 5 confident images; class 1: 2 confident + 1 below threshold; class 2: none at all
    argmax = [0, 0, 0, 0, 0, 1, 1, 1]
    confidence = [0.5, 0.9, 0.7, 0.35, 0.8, 0.6, 0.95, 0.1]
    store = make_store(tmp_path / "store", argmax, confidence, shard_size=3, num_classes=3)
    stats = select_from_store(store, tmp_path / "selection.parquet", 3, threshold=0.3, images_per_class=3)
    assert multiplicities(tmp_path / "selection.parquet", 8).tolist() == [0, 1, 1, 0, 1, 1, 2, 0]
    by_class = {c["class"]: c for c in stats["per_class"]}
    assert by_class[0] == {"class": 0, "available": 5, "kept": 5, "dropped_out_of_domain": 0, "dropped_low_confidence": 0,
                           "dropped_over_target": 2, "duplicated": 0, "selected": 3}
    assert by_class[1] == {"class": 1, "available": 3, "kept": 2, "dropped_out_of_domain": 0, "dropped_low_confidence": 1,
                           "dropped_over_target": 0, "duplicated": 1, "selected": 3}
    assert by_class[2]["selected"] == 0 and by_class[2]["available"] == 0
    assert stats["selected"] == 6 and stats["kept_fraction"] == 7 / 8


def test_default_target_is_the_mean_kept_count(tmp_path):
    store = make_store(tmp_path / "store", [0] * 6 + [1] * 2, [0.9] * 8, shard_size=5)
    stats = select_from_store(store, tmp_path / "s.parquet", 2, threshold=0.3, images_per_class=None)
    assert stats["images_per_class"] == 4 and [c["selected"] for c in stats["per_class"]] == [4, 4]
    assert multiplicities(tmp_path / "s.parquet", 8).tolist() == [1, 1, 1, 1, 0, 0, 2, 2], "ties: earlier row wins"


@pytest.mark.parametrize("target", [1, 37, 400, 5000])
def test_streamed_top_confidence_equals_the_in_memory_rule(tmp_path, target):
    rng = np.random.default_rng(target)
    n, classes = 20_000, 7
    argmax = rng.integers(0, classes, n) ** 2 % classes  # uneven class sizes
    # many exact ties and a saturated region near 1.0, where coarse bins would lump everything
    confidence = np.where(rng.random(n) < 0.3, np.float32(1.0) - rng.integers(0, 4, n) * np.float32(2 ** -24),
                          np.round(rng.random(n), 3)).astype(np.float32)
    store = make_store(tmp_path / "store", argmax, confidence, shard_size=1_500, num_classes=classes)
    select_from_store(store, tmp_path / "s.parquet", classes, threshold=0.3, images_per_class=target)
    expected = reference_top_confidence(argmax, confidence, classes, 0.3, target)
    assert np.array_equal(multiplicities(tmp_path / "s.parquet", n), expected)


def test_official_mode_thresholds_per_class_on_0_01_bins(tmp_path):
    argmax = [0, 0, 0, 0, 1, 1, 1, 2]
    confidence = [0.955, 0.925, 0.85, 0.5, 0.6, 0.455, 0.2, 0.7]
    store = make_store(tmp_path / "store", argmax, confidence, shard_size=3)
    stats = select_from_store(store, tmp_path / "s.parquet", 3, threshold=0.3, images_per_class=2, mode="official")
    # class 0: two images at >= 0.92 -> threshold 0.92, each once; class 1: 0.6 and 0.455 -> threshold 0.45;
    # class 2: one image, never 2 -> the minimum threshold, written 2 / 1 = 2 times
    assert [c["threshold"] for c in stats["per_class"]] == [0.92, 0.45, 0.3]
    assert multiplicities(tmp_path / "s.parquet", 8).tolist() == [1, 1, 0, 0, 1, 1, 0, 2]


def test_official_mode_random_rounding_reaches_the_target_in_expectation(tmp_path):
    n_long, n_short = 30_000, 4_000
    argmax = np.r_[np.zeros(n_long, int), np.ones(n_short, int)]
    confidence = np.full(n_long + n_short, 0.805, np.float32)  # one 0.01 bin: no threshold can split them
    store = make_store(tmp_path / "store", argmax, confidence, shard_size=5_000)
    target = 10_000
    stats = select_from_store(store, tmp_path / "a.parquet", 2, 0.3, target, mode="official", seed=1)
    long_, short = stats["per_class"]
    sigma_long = np.sqrt(n_long * (1 / 3) * (2 / 3))  # each kept with probability 1/3
    sigma_short = np.sqrt(n_short * 0.5 * 0.5)  # 2 or 3 copies, each with probability 1/2
    assert abs(long_["selected"] - target) < 4 * sigma_long and long_["duplicated"] == 0
    assert abs(short["selected"] - target) < 4 * sigma_short
    copies = multiplicities(tmp_path / "a.parquet", n_long + n_short)
    assert set(np.unique(copies[:n_long])) == {0, 1} and set(np.unique(copies[n_long:])) == {2, 3}
    select_from_store(store, tmp_path / "b.parquet", 2, 0.3, target, mode="official", seed=1)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes(), "seeded"


def select_pass(index: int, store_root, mode: str) -> None:
    store = LabelStore(store_root)
    select_from_store(store, store_root.parent / f"selection-{index}.parquet", 10, 0.3, 1_000, mode=mode)


@pytest.mark.parametrize("mode", ["top_confidence", "official"])
def test_selection_memory_does_not_grow_with_the_pool(tmp_path, mode):
    """Selection reads the store a shard (10,000 rows) at a time, so a pool of 800,000 rows peaks
    where one of 50,000 does. Holding the pool's columns (ids as Arrow strings, argmax, confidence,
    a row index: about 30 bytes a row) would add over 20 MB; the bound is a third of that. Peak
    resident memory (tests/memory.py), since tracemalloc sees none of Arrow's allocations."""
    roots = {}
    for n in (50_000, 800_000):
        rng = np.random.default_rng(n)
        roots[n] = tmp_path / f"pool-{n}" / "store"
        make_store(roots[n], rng.integers(0, 10, n), rng.random(n), shard_size=10_000)
    whole_pool_columns = (800_000 - 50_000) * (8 + 4 + 8 + 4 + len("u123456"))  # the last two: an id's offset and text
    growth = peak_growth(select_pass, (roots[50_000], mode), (roots[800_000], mode))
    assert growth < whole_pool_columns / 3, f"peak grew {growth} bytes as the pool grew from 50,000 to 800,000 rows"


def test_a_teacher_for_other_classes_is_refused_on_the_first_batch(tmp_path):
    with pytest.raises(UserError, match="the teacher predicts 3 classes but the data has 10"):
        pseudo_label(build_model("resnet_tiny_32", 3, 1), make_pool(), LabelConfig(batch_size=8), tmp_path,
                     torch.device("cpu"))
    assert not list(tmp_path.glob("shard-*"))


@pytest.mark.parametrize("drop", [False, True])
def test_out_of_domain_filter_drops_flags_and_counts_separately(tmp_path, drop):
    """Scores 0..19 against a reference uniform on [0, 10]: its 0.9 quantile is 9, so 10..19
    are flagged (listed in the CSV) and, with the filter, dropped and counted as out of domain,
    not as low confidence."""
    from noisystudent.labels import OutOfDomain
    confidence = np.where(np.arange(20) < 2, 0.1, 0.9)  # rows 0 and 1 fall to the threshold
    store = make_store(tmp_path / "store", np.arange(20) % 2, confidence, 7, scores=np.arange(20))
    stats = select_from_store(store, tmp_path / "selection.parquet", 2, 0.3, 9,
                              out_of_domain=OutOfDomain(np.linspace(0, 10, 101), 0.9, drop, "energy"))
    rows, _ = read_selection(tmp_path / "selection.parquet")
    ood = stats["out_of_domain"]
    assert ood["above"] == 10 and ood["share_above"] == pytest.approx(0.5) and ood["threshold"] == pytest.approx(9)
    flagged = (tmp_path / "out_of_domain.csv").read_text().splitlines()
    assert flagged[0] == "id,predicted_class,confidence,ood_score,dropped" and len(flagged) == 11
    assert flagged[1] == f"u10,0,0.9000,10.0000,{int(drop)}"
    assert stats["dropped_low_confidence"] == 2
    if drop:
        assert sorted(rows.tolist()) == list(range(2, 10)) and stats["kept"] == 8 and stats["dropped_out_of_domain"] == 10
        assert [c["dropped_out_of_domain"] for c in stats["per_class"]] == [5, 5]
        assert all(c["suspect_copies"] == 0 for c in stats["per_class"])
    else:
        assert sorted(rows.tolist()) == list(range(2, 20)) and stats["kept"] == 18 and stats["dropped_out_of_domain"] == 0
        assert [c["suspect_copies"] for c in stats["per_class"]] == [5, 5]
        assert [c["suspect_share"] for c in stats["per_class"]] == [pytest.approx(5 / 9)] * 2
        assert len(stats["warnings"]) == 2 and stats["warnings"][0].startswith("class 0: 56% of its 9 selected copies")


def test_energy_is_minus_logsumexp_of_the_logits_and_is_stored():
    from noisystudent.labels import energy
    logits = torch.tensor([[10.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert torch.allclose(energy(logits), -torch.logsumexp(logits, 1))
    assert energy(logits)[0] < energy(logits)[1], "a confident image scores lower (more in domain)"
    table = shard_table(["a", "b"], logits, 1.0, 3)
    assert np.allclose(table.column("energy").to_numpy(), energy(logits).numpy())
    assert np.allclose(table.column("ood_score").to_numpy(), energy(logits).numpy()), "the score when none is fit"


def test_a_noised_teacher_labels_differently_reproducibly_and_into_its_own_store(tmp_path):
    """The paper's noised-teacher ablation (noise.labeling): dropout and stochastic depth on,
    BatchNorm on its running statistics, RandAugment on the inputs; seeded per shard and batch."""
    from noisystudent.noise import RandAugment, StudentNoise
    pool, config = make_pool(), LabelConfig(batch_size=16, shard_size=25)
    torch.manual_seed(0)
    model = build_model("resnet_tiny_32", 10, 1, dropout=0.5, survival_prob=0.5)
    running = {name: value.clone() for name, value in model.state_dict().items() if "running" in name}
    noise = StudentNoise(0.5, 0.5, RandAugment(2, 10, pixels="relative"))
    probe = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    clean_logits = predict_logits(model, probe, 8, torch.device("cpu"))
    clean = pseudo_label(model, pool, config, tmp_path / "clean", torch.device("cpu"))
    noised = pseudo_label(model, pool, config, tmp_path / "noised", torch.device("cpu"), noise=noise)
    assert torch.equal(predict_logits(model, probe, 8, torch.device("cpu")), clean_logits), \
        "after noised labeling the same model predicts un-noised (the pipeline's labeled energies use it)"
    again = pseudo_label(model, pool, config, tmp_path / "again", torch.device("cpu"), noise=noise)
    assert not np.allclose(clean.column("confidence"), noised.column("confidence"))
    assert np.array_equal(noised.column("confidence"), again.column("confidence")), "seeded"
    assert all(torch.equal(model.state_dict()[name], value) for name, value in running.items()), \
        "BatchNorm ran on its running statistics and did not update them"
    assert json.loads((tmp_path / "noised" / "header.json").read_text())["noised"]["randaugment"]["magnitude"] == 10
    with pytest.raises(UserError, match="noised"):
        pseudo_label(model, pool, config, tmp_path / "clean", torch.device("cpu"), noise=noise)
