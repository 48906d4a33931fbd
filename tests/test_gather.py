"""The student's pseudo-labeled set is gathered from the pool once and read lazily."""

from pathlib import Path

import numpy as np
import pytest
import torch

from noisystudent.config import LabelConfig, load_config
from noisystudent.data import open_pool
from noisystudent.data.folder import decode_image
from noisystudent.data.rows import ENCODED
from noisystudent.errors import UserError
from noisystudent.labels import (IMAGES, SELECTION_FILE, LabelStore, gather_selected_images, load_pseudo_labeled,
                                 pseudo_label, read_selection, select_from_store)
from noisystudent.labels.gather import STORAGES
from noisystudent.models import build_model, load_exported
from noisystudent.pipeline import Pipeline, run
from noisystudent.train.loop import inputs_fingerprint
from memory import peak_growth
from test_folder_data import COLORS, make_tree, write_shard

CPU = torch.device("cpu")


def label_and_select(tmp_path, source, images_per_class, shard_size=5, size=16):
    pool = open_pool(source, size, 3, 0.5, list(COLORS))
    torch.manual_seed(0)
    store = pseudo_label(build_model("resnet_tiny_32", 3, 3), pool, LabelConfig(batch_size=4, shard_size=shard_size),
                         tmp_path / "store", CPU)
    select_from_store(store, tmp_path / "selection" / SELECTION_FILE, 3, threshold=0.0,
                      images_per_class=images_per_class)
    return pool, store


@pytest.mark.parametrize("kind", ["folder", "webdataset"])
@pytest.mark.parametrize("storage", ["pixels", "encoded"])
def test_selected_images_are_the_pools_pixels_read_lazily_with_sparse_targets(tmp_path, kind, storage):
    make_tree(tmp_path / "pool", 6, seed=7)
    (tmp_path / "pool" / "green" / "bad.png").write_bytes(b"")  # skipped at labeling, never gathered
    source = tmp_path / "pool"
    if kind == "webdataset":
        files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.png"))
        members = [(name, (source / name).read_bytes()) for name in files]
        write_shard(tmp_path / "pool-0.tar", members[:8])
        write_shard(tmp_path / "pool-1.tar", members[8:])
        source = str(tmp_path / "pool-{0..1}.tar")
    pool, store = label_and_select(tmp_path, source, images_per_class=4)
    gather_selected_images(pool, store, tmp_path / "selection", batch_size=3, storage=storage)
    pseudo = load_pseudo_labeled(store, tmp_path / "selection", "soft", 3)
    rows, copies = read_selection(tmp_path / "selection" / SELECTION_FILE)
    assert len(rows) > 1 and np.all(np.diff(rows) > 0), "store-row order"
    ids = store.column("id")[rows]
    expected = torch.stack([torch.from_numpy(decode_image(tmp_path / "pool" / i, 16, 3).copy()) for i in ids])
    assert torch.equal(pseudo.images[:], expected)
    assert torch.equal(pseudo.images[torch.tensor([2, 0, 2])], expected[[2, 0, 2]]), "any rows, in any order"
    if storage == "pixels":
        assert isinstance(np.load(tmp_path / "selection" / IMAGES, mmap_mode="r"), np.memmap)
    else:  # the pool's own bytes, nothing decoded kept
        assert not (tmp_path / "selection" / IMAGES).exists()
        assert (tmp_path / "selection" / ENCODED).read_bytes() == b"".join((tmp_path / "pool" / i).read_bytes() for i in ids)
    assert torch.equal(pseudo.copies, torch.from_numpy(copies.astype(np.int64)))
    class_ids, probs = store.topk(rows, "soft")
    assert torch.equal(pseudo.class_ids, torch.from_numpy(class_ids).int()) and torch.allclose(pseudo.probs.sum(1), torch.ones(len(rows)))
    # the official code smooths hard pseudo labels like labeled ones (label_smoothing), soft ones not at all
    everything = torch.arange(len(rows))
    soft = load_pseudo_labeled(store, tmp_path / "selection", "soft", 3, label_smoothing=0.1).targets(everything)
    assert torch.allclose(soft, pseudo.targets(everything))
    hard = load_pseudo_labeled(store, tmp_path / "selection", "hard", 3, label_smoothing=0.1).targets(everything)
    assert torch.allclose(hard.max(1).values, torch.full((len(rows),), 0.9 + 0.1 / 3))
    assert torch.allclose(hard.min(1).values, torch.full((len(rows),), 0.1 / 3))
    assert torch.equal(hard.argmax(1), torch.from_numpy(store.column("argmax")[rows]).long())


def test_a_pool_that_changed_since_labeling_is_refused_by_name(tmp_path):
    make_tree(tmp_path / "pool", 4, seed=8)
    pool, store = label_and_select(tmp_path, tmp_path / "pool", images_per_class=12)
    rows, _ = read_selection(tmp_path / "selection" / SELECTION_FILE)
    gone = store.column("id")[rows][-1]
    (tmp_path / "pool" / gone).unlink()
    with pytest.raises(UserError, match=f"{gone} was labeled but no longer decodes"):
        gather_selected_images(pool, store, tmp_path / "selection")
    with pytest.raises(UserError, match="made from another pool"):
        gather_selected_images(open_pool(tmp_path / "pool", 16, 3, 0.5, list(COLORS)), store, tmp_path / "selection")
    assert not (tmp_path / "selection" / IMAGES).exists() and not list((tmp_path / "selection").glob(".*.tmp"))


def label_select_gather_load(index: int, folder: Path, source: Path, size: int) -> None:
    """A labeling pass on `source` at `size` px: label, select 20 images per class, gather, load."""
    torch.set_num_threads(1)
    pool, store = label_and_select(folder / f"pass-{index}", source, images_per_class=20, shard_size=100, size=size)
    gather_selected_images(pool, store, folder / f"pass-{index}" / "selection", batch_size=16)
    pseudo = load_pseudo_labeled(store, folder / f"pass-{index}" / "selection", "soft", 3)
    assert len(pseudo.images) > 0 and bool(pseudo.images[:].any()), "images gathered and read back"


def test_labeling_and_gathering_never_hold_the_pool_in_memory(tmp_path):
    """Pools of 180 and 900 images decoded at 96 px RGB (5.0 and 24.9 MB of pixels): what a pass
    holds is one batch of pixels, one shard of predictions and per-class histograms, the same for
    both (measured: 2.2 and 2.5 MB more). Holding the pool's pixels (as a tensor, an Arrow table or
    arrays) would add 19.9 MB (a list of its batches as tensors: 28 MB), 3x the bound. Peak
    resident memory (tests/memory.py), not tracemalloc, which sees neither torch's nor Arrow's."""
    pixels = {}
    for per_class in (60, 300):
        make_tree(tmp_path / f"pool-{per_class}", per_class, seed=9)
        pixels[per_class] = len(COLORS) * per_class * 3 * 96 * 96
    growth = peak_growth(label_select_gather_load, (tmp_path / "runs", tmp_path / "pool-60", 96),
                         (tmp_path / "runs", tmp_path / "pool-300", 96))
    assert growth < (pixels[300] - pixels[60]) / 3, f"peak grew {growth} bytes as the pool grew from 180 to 900 images"


def test_a_student_trained_on_encoded_images_is_the_one_trained_on_pixels(tiny_config):
    """selection.storage changes where the selected images' bytes are, not a pixel or a random
    choice: the same student, bit for bit, and the same checkpoint fingerprint (a switch resumes)."""
    students, fingerprints = {}, {}
    for storage in STORAGES:
        config = load_config(overrides=[f"name=tiny-{storage}", f"selection.storage={storage}"], base=tiny_config)
        run(config, log=lambda line: None)
        round_1 = Path(config.runs_dir) / config.name / "round-1"
        assert (round_1 / "selection" / IMAGES).exists() == (storage == "pixels")
        assert (round_1 / "selection" / ENCODED).exists() == (storage == "encoded")
        students[storage] = load_exported(round_1 / "student").state_dict()
        pipeline = Pipeline(config)
        pseudo = load_pseudo_labeled(LabelStore(round_1 / "labels"), round_1 / "selection", config.labels.kind, 10)
        fingerprints[storage] = inputs_fingerprint(pipeline.labeled, pseudo, config.student, config.seed)
    assert students["pixels"].keys() == students["encoded"].keys()
    assert all(torch.equal(students["pixels"][k], students["encoded"][k]) for k in students["pixels"])
    assert fingerprints["pixels"] == fingerprints["encoded"]


def test_a_damaged_encoded_selection_is_named_with_the_way_out(tmp_path):
    make_tree(tmp_path / "pool", 4, seed=3)
    pool, store = label_and_select(tmp_path, tmp_path / "pool", images_per_class=4)
    gather_selected_images(pool, store, tmp_path / "selection", storage="encoded")
    encoded = tmp_path / "selection" / ENCODED
    encoded.write_bytes(encoded.read_bytes()[:-10])  # truncated: the offsets no longer agree
    with pytest.raises(UserError, match="does not match .* delete .*selection"):
        load_pseudo_labeled(store, tmp_path / "selection", "soft", 3)
    encoded.write_bytes(b"\0" * (len(encoded.read_bytes()) + 10))  # the right size, garbage inside
    pseudo = load_pseudo_labeled(store, tmp_path / "selection", "soft", 3)
    with pytest.raises(UserError, match="image 0 no longer decodes .* delete .*selection"):
        pseudo.images[[0]]


def test_targets_are_written_once_into_the_students_folder_and_memory_mapped(tmp_path):
    make_tree(tmp_path / "pool", 4, seed=5)
    pool, store = label_and_select(tmp_path, tmp_path / "pool", images_per_class=4)
    rows, _ = read_selection(tmp_path / "selection" / SELECTION_FILE)
    expected = {}
    for kind in ("soft", "hard"):
        expected[kind] = store.topk(rows, kind)
        mapped = store.topk(rows, kind, tmp_path / f"student-{kind}")
        assert all(isinstance(array, np.memmap) for array in mapped)
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(expected[kind], mapped))
    for shard in store.shard_paths():  # a second call reads the files, not the store
        shard.unlink()
    again = store.topk(rows, "soft", tmp_path / "student-soft")
    assert all(np.array_equal(a, b) for a, b in zip(again, expected["soft"]))
