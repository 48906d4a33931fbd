"""Your own images from folders: decoding, bad files, path escapes, and a run end to end."""

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noisystudent.config import load_config
from noisystudent.config import LabelConfig
from noisystudent.data import open_pool
from noisystudent.data.folder import decode_image, image_ids, load_labeled, BadImage
from noisystudent.labels import pseudo_label
from noisystudent.models import build_model
from noisystudent.errors import UserError
from noisystudent.pipeline import run

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def write_image(path: Path, color, rng, size=(24, 20), fmt=None, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.array(color)[None, None] + rng.integers(-30, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    image.save(path, format=fmt)


def make_tree(root: Path, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name, color in COLORS.items():
        for i in range(per_class):
            write_image(root / name / f"{i}.png", color, rng)


def test_every_kind_of_odd_image_is_decoded_or_reported(tmp_path):
    rng = np.random.default_rng(0)
    write_image(tmp_path / "rgb.jpg", COLORS["red"], rng)
    write_image(tmp_path / "cmyk.jpg", COLORS["red"], rng, mode="CMYK")
    write_image(tmp_path / "gray.png", COLORS["red"], rng, mode="L")
    write_image(tmp_path / "rgba.png", COLORS["red"], rng, mode="RGBA")
    palette = Image.new("P", (16, 16), 0)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png", transparency=0)
    for name in ("rgb.jpg", "cmyk.jpg", "gray.png", "rgba.png", "palette.png"):
        for channels in (1, 3):
            array = decode_image(tmp_path / name, 16, channels)
            assert array.shape == (channels, 16, 16) and array.dtype == np.uint8, name
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    data = (tmp_path / "rgb.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    for name in ("empty.jpg", "text.jpg", "truncated.jpg"):
        with pytest.raises(BadImage):
            decode_image(tmp_path / name, 16, 3)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    write_image(tmp_path / "big.png", COLORS["red"], np.random.default_rng(0), size=(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImage, match="DecompressionBomb"):
        decode_image(tmp_path / "big.png", 16, 3)


def decode_pool(pool):
    """(ids, images, bad) of a whole pool, decoded in one go (fine for a test-sized pool)."""
    batches = [batch for _, items in pool.chunks(10**6) for batch in pool.batches(items, 10**6)]
    return ([i for b in batches for i in b.ids], torch.cat([b.images for b in batches]),
            [bad for b in batches for bad in b.bad])


def test_bad_files_are_skipped_listed_per_shard_and_stop_the_stage_past_the_limit(tmp_path):
    make_tree(tmp_path / "pool", 4, seed=1)
    (tmp_path / "pool" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    (tmp_path / "pool" / "blue" / "empty.png").write_bytes(b"")
    teacher, config = build_model("resnet_tiny_32", 3, 3), LabelConfig(batch_size=4, shard_size=5)
    pool = open_pool(tmp_path / "pool", 16, 3, max_bad_fraction=0.2, classes=list(COLORS))
    store = pseudo_label(teacher, pool, config, tmp_path / "store", torch.device("cpu"))
    manifest = store.manifest
    assert manifest["inputs"] == 14 and manifest["count"] == 12 and manifest["bad_files"] == 2
    listed = {entry["id"]: shard["name"] for shard in manifest["shards"] for entry in shard["bad_files"]}
    # sorted listing: blue/0-3, blue/empty.png | green/0-3, red/0 | red/1-3, red/broken.jpg
    assert listed == {"blue/empty.png": "shard-00000.parquet", "red/broken.jpg": "shard-00002.parquet"}
    assert [shard["count"] for shard in manifest["shards"]] == [4, 5, 3]
    assert "red/broken.jpg" not in set(store.column("id"))
    strict = open_pool(tmp_path / "pool", 16, 3, max_bad_fraction=0.1, classes=list(COLORS))
    with pytest.raises(UserError, match=r"2 of 14 images .*data.max_bad_fraction=0.1.*blue/empty.png"):
        pseudo_label(teacher, strict, config, tmp_path / "strict", torch.device("cpu"))
    assert not (tmp_path / "strict" / "manifest.json").exists() and len(list((tmp_path / "strict").glob("shard-*"))) == 3


def test_symlink_out_of_the_root_is_refused(tmp_path):
    make_tree(tmp_path / "pool", 1, seed=2)
    outside = tmp_path / "secret.png"
    write_image(outside, COLORS["red"], np.random.default_rng(0))
    (tmp_path / "pool" / "red" / "link.png").symlink_to(outside)
    with pytest.raises(UserError, match="link.png is a link to outside"):
        list(image_ids(tmp_path / "pool"))


def test_labeled_folder_classes_and_stable_ids(tmp_path):
    make_tree(tmp_path / "train", 3, seed=3)
    images, _ = load_labeled(tmp_path / "train", 16, 3, 0.0)
    assert images.classes == ["blue", "green", "red"] and images.images.shape == (9, 3, 16, 16)
    assert images.ids[0] == "blue/0.png" and images.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    (tmp_path / "test" / "purple").mkdir(parents=True)
    with pytest.raises(UserError, match="purple"):
        load_labeled(tmp_path / "test", 16, 3, 0.0, classes=images.classes)


@pytest.mark.parametrize("storage", ["cache", "files"])
def test_a_run_on_your_own_folders(tmp_path, storage):
    for split, count, seed in (("train", 6, 4), ("unlabeled", 20, 5), ("test", 5, 6)):
        make_tree(tmp_path / split, count, seed)
    config = load_config(overrides=[
        f"data.storage={storage}", "data.dataset=folder", f"data.labeled={tmp_path / 'train'}", f"data.unlabeled={tmp_path / 'unlabeled'}",
        f"data.test={tmp_path / 'test'}", "data.image_size=16", f"runs_dir={tmp_path / 'runs'}", "rounds=1",
        "models=resnet_tiny_32", "teacher.epochs=10", "teacher.batch_size=6", "student.epochs=1",
        "student.batch_size=6", "selection.confidence_threshold=0", "noise.randaugment_magnitude=5"])
    summary = run(config, log=lambda line: None)
    assert summary["rounds"][0]["pseudo_label_accuracy"] is None, "a folder pool has no hidden truth"
    assert summary["teacher_top1"] == 1.0, "three flat colors: every test image is learnable"
    # a student of 4 steps is noise; what must hold is that it was trained and evaluated on these folders
    student = json.loads((tmp_path / "runs" / "demo" / "round-1" / "student" / "eval.json").read_text())
    assert summary["final_top1"] == student["top1"] and student["n"] == 15 and list(student["per_class_accuracy"]) == sorted(COLORS)


def test_labeled_manifests_csv_and_jsonl_give_the_folder_classes_and_ids(tmp_path):
    make_tree(tmp_path / "data", 2, seed=4)
    rows = [(f"{name}/{i}.png", name) for name in COLORS for i in range(2)]
    (tmp_path / "data" / "train.csv").write_text("path,label\n" + "".join(f"{p},{c}\n" for p, c in rows))
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps({"path": p, "label": c}) + "\n" for p, c in rows))
    folder, _ = load_labeled(tmp_path / "data", 16, 3, 0.0)  # the .csv/.jsonl files are not class folders
    for manifest in ("train.csv", "train.jsonl"):
        images, report = load_labeled(tmp_path / "data" / manifest, 16, 3, 0.0)
        assert images.classes == sorted(COLORS) and report.total == 6 and not report.bad
        assert sorted(images.ids) == sorted(folder.ids)
        by_id = {i: k for k, i in enumerate(folder.ids)}
        order = [by_id[i] for i in images.ids]
        assert torch.equal(images.images, folder.images[order]) and torch.equal(images.labels, folder.labels[order])


@pytest.mark.parametrize("entry", ["../outside.png", "ABSOLUTE", "red/link.png"])
def test_manifest_entries_outside_the_root_are_refused_by_name(tmp_path, entry):
    make_tree(tmp_path / "data", 1, seed=5)
    outside = tmp_path / "outside.png"
    write_image(outside, COLORS["red"], np.random.default_rng(0))
    (tmp_path / "data" / "red" / "link.png").symlink_to(outside)
    entry = str(outside) if entry == "ABSOLUTE" else entry
    (tmp_path / "data" / "pool.csv").write_text(f"path\nred/0.png\n{entry}\n")
    with pytest.raises(UserError, match=f"entry '{re.escape(entry)}' points outside the dataset root"):
        open_pool(tmp_path / "data" / "pool.csv", 16, 3, 0.0, list(COLORS))


def test_manifest_mistakes_name_the_line_and_the_fix(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"path": "x.png"}\nnot json\n')
    with pytest.raises(UserError, match="a.jsonl line 2: not JSON"):
        open_pool(tmp_path / "a.jsonl", 16, 3, 0.0, ["c"])
    (tmp_path / "b.csv").write_text("file,label\nx.png,c\n")
    with pytest.raises(UserError, match="header row with a 'path' column"):
        load_labeled(tmp_path / "b.csv", 16, 3, 0.0)
    (tmp_path / "c.csv").write_text("path,label\nx.png,\n")
    with pytest.raises(UserError, match="every entry of a labeled manifest needs a label"):
        load_labeled(tmp_path / "c.csv", 16, 3, 0.0)
    (tmp_path / "d.csv").write_text("path\nred/nope.png\n")
    _, _, bad = decode_pool(open_pool(tmp_path / "d.csv", 16, 3, 0.0, ["c"]))
    assert bad[0][0] == "red/nope.png" and "No such file" in bad[0][1]


def write_shard(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards_give_the_folder_ids_and_pixels_and_report_bad_samples(tmp_path):
    make_tree(tmp_path / "pool", 3, seed=6)
    (tmp_path / "pool" / "blue" / "9.jpg").write_bytes(b"\xff\xd8\xff truncated")
    folder_ids, folder_images, folder_bad = decode_pool(open_pool(tmp_path / "pool", 16, 3, 0.5, list(COLORS)))
    files = sorted(p.relative_to(tmp_path / "pool").as_posix() for p in (tmp_path / "pool").rglob("*.*"))
    members = [(name, (tmp_path / "pool" / name).read_bytes()) for name in files]
    write_shard(tmp_path / "pool-0.tar", members[:5])
    write_shard(tmp_path / "pool-1.tar", members[5:] + [("green/label-only.txt", b"no image here")])
    ids, images, bad = decode_pool(open_pool(str(tmp_path / "pool-{0..1}.tar"), 16, 3, 0.5, list(COLORS)))
    assert ids == folder_ids, "same ids for the same images"
    assert torch.equal(images, folder_images), "same pixels"
    assert [image_id for image_id, _ in folder_bad] == ["blue/9.jpg"]
    assert sorted(image_id for image_id, _ in bad) == ["blue/9.jpg", "green/label-only (no image in the sample)"]
    with pytest.raises(UserError, match=r"pool-2.tar not found \(6 of 8 "):
        decode_pool(open_pool(str(tmp_path / "pool-{0..7}.tar"), 16, 3, 0.5, list(COLORS)))


def test_decoding_in_threads_gives_the_inline_batches_in_order(tmp_path):
    make_tree(tmp_path / "pool", 7, seed=10)
    (tmp_path / "pool" / "green" / "3.png").write_bytes(b"not a png")
    (tmp_path / "pool" / "red" / "x.jpg").write_bytes(b"")
    inline = open_pool(tmp_path / "pool", 16, 3, 0.5, list(COLORS), decode_threads=0)
    threaded = open_pool(tmp_path / "pool", 16, 3, 0.5, list(COLORS), decode_threads=3)
    for wanted in (None, {"blue/1.png", "green/3.png", "green/4.png", "red/6.png"}):
        runs = [[batch for _, items in pool.chunks(6) for batch in pool.batches(items, 4, wanted)]
                for pool in (inline, threaded)]
        for got in runs:
            assert sum(batch.inputs for batch in got) == 22, "every item read is counted, wanted or not"
        flat = [([i for b in got for i in b.ids], torch.cat([b.images for b in got]), [x for b in got for x in b.bad])
                for got in runs]
        assert flat[0][0] == flat[1][0] and torch.equal(flat[0][1], flat[1][1]) and flat[0][2] == flat[1][2]
    assert flat[0][0] == ["blue/1.png", "green/4.png", "red/6.png"] and flat[0][2][0][0] == "green/3.png"


def mapped_from(tensor: torch.Tensor, folder: Path) -> bool:
    """Whether the tensor's memory is a mapping of a file in `folder` (Linux /proc/self/maps)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(part, 16) for part in fields[0].split("-"))
        if len(fields) == 6 and start <= address < end:
            return Path(fields[5]).parent == folder.resolve()
    return False


def test_labeled_sets_are_decoded_once_into_a_memory_mapped_cache(tmp_path, monkeypatch):
    """The pixels of a cached set come from a file on disk; a second load decodes nothing; any
    changed file (or resolution) decodes again; bad images stay listed from the cache."""
    from noisystudent.data import folder as folder_module
    make_tree(tmp_path / "train", 3, seed=3)
    (tmp_path / "train" / "red" / "broken.png").write_bytes(b"not a png")
    in_memory, report = load_labeled(tmp_path / "train", 16, 3, 0.2)
    cache = tmp_path / "cache"
    cached, cached_report = load_labeled(tmp_path / "train", 16, 3, 0.2, cache_dir=cache)
    assert torch.equal(cached.images, in_memory.images) and torch.equal(cached.labels, in_memory.labels)
    assert cached.ids == in_memory.ids and cached_report.bad == report.bad == [("red/broken.png", "UnidentifiedImageError")]
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].startswith("train-") and {Path(f).suffix for f in files} == {".json", ".npy"}
    assert mapped_from(cached.images, cache) and not mapped_from(in_memory.images, cache), "memory-mapped from the cache"

    def no_decoding(*args):
        raise AssertionError("decoded again")
    monkeypatch.setattr(folder_module, "decode_image", no_decoding)
    again, again_report = load_labeled(tmp_path / "train", 16, 3, 0.2, cache_dir=cache)
    assert torch.equal(again.images, in_memory.images) and again_report.bad == report.bad
    with pytest.raises(UserError, match="1 of 10 images"):
        load_labeled(tmp_path / "train", 16, 3, 0.0, cache_dir=cache)  # the limit applies to cached reports too
    monkeypatch.undo()
    write_image(tmp_path / "train" / "red" / "0.png", COLORS["blue"], np.random.default_rng(9))  # changed content
    changed, _ = load_labeled(tmp_path / "train", 16, 3, 0.2, cache_dir=cache)
    assert not torch.equal(changed.images, in_memory.images) and len(list(cache.iterdir())) == 4
    assert in_memory.digest is None and None is not cached.digest != changed.digest, \
        "a cached set is fingerprinted by its listing, which the changed file changed"
    load_labeled(tmp_path / "train", 8, 3, 0.2, cache_dir=cache)
    assert len(list(cache.iterdir())) == 6, "another resolution is another cache entry"


def test_files_storage_reads_the_same_pixels_from_the_files_and_keeps_nothing(tmp_path):
    """data.storage=files: every image checked once, then decoded whenever rows are read; the
    same pixels and the same identity (digest) as the cache, so switching resumes a stage."""
    make_tree(tmp_path / "train", 3, seed=3)
    (tmp_path / "train" / "red" / "broken.png").write_bytes(b"not a png")
    cached, _ = load_labeled(tmp_path / "train", 16, 3, 0.2, cache_dir=tmp_path / "cache")
    files, report = load_labeled(tmp_path / "train", 16, 3, 0.2, storage="files")
    assert report.bad == [("red/broken.png", "UnidentifiedImageError")] and files.ids == cached.ids
    assert files.images.shape == cached.images.shape and files.digest == cached.digest
    assert torch.equal(files.images[torch.tensor([4, 0, 8])], cached.images[torch.tensor([4, 0, 8])])
    assert torch.equal(files.images[2:5], cached.images[2:5])
    part = files.subset(range(3, 7))
    assert torch.equal(part.images[:], cached.images[3:7]) and part.ids == cached.ids[3:7]
    (tmp_path / "train" / "blue" / "1.png").write_bytes(b"changed under our feet")
    with pytest.raises(UserError, match="blue/1.png no longer decodes"):
        files.images[torch.tensor([1])]
