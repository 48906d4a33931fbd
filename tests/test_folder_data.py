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
from noisystudent.data.folder import decode_image, list_images, load_labeled, load_unlabeled, BadImage
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


def test_bad_files_are_skipped_counted_and_stop_the_run_past_the_limit(tmp_path):
    make_tree(tmp_path / "pool", 4, seed=1)
    (tmp_path / "pool" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    pool, report = load_unlabeled(tmp_path / "pool", 16, 3, max_bad_fraction=0.1, classes=list(COLORS))
    assert len(pool) == 12 and report.total == 13 and report.bad[0][0] == "red/broken.jpg"
    assert "red/broken.jpg" not in pool.ids and (pool.labels == -1).all() and pool.skipped == report.bad
    with pytest.raises(UserError, match="1 of 13 images .* red/broken.jpg"):
        load_unlabeled(tmp_path / "pool", 16, 3, max_bad_fraction=0.05, classes=list(COLORS))


def test_symlink_out_of_the_root_is_refused(tmp_path):
    make_tree(tmp_path / "pool", 1, seed=2)
    outside = tmp_path / "secret.png"
    write_image(outside, COLORS["red"], np.random.default_rng(0))
    (tmp_path / "pool" / "red" / "link.png").symlink_to(outside)
    with pytest.raises(UserError, match="link.png is a link to outside"):
        list_images(tmp_path / "pool")


def test_labeled_folder_classes_and_stable_ids(tmp_path):
    make_tree(tmp_path / "train", 3, seed=3)
    images, _ = load_labeled(tmp_path / "train", 16, 3, 0.0)
    assert images.classes == ["blue", "green", "red"] and images.images.shape == (9, 3, 16, 16)
    assert images.ids[0] == "blue/0.png" and images.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    (tmp_path / "test" / "purple").mkdir(parents=True)
    with pytest.raises(UserError, match="purple"):
        load_labeled(tmp_path / "test", 16, 3, 0.0, classes=images.classes)


def test_a_run_on_your_own_folders(tmp_path):
    for split, count, seed in (("train", 6, 4), ("unlabeled", 20, 5), ("test", 5, 6)):
        make_tree(tmp_path / split, count, seed)
    config = load_config(overrides=[
        "data.dataset=folder", f"data.labeled={tmp_path / 'train'}", f"data.unlabeled={tmp_path / 'unlabeled'}",
        f"data.test={tmp_path / 'test'}", "data.image_size=16", f"runs_dir={tmp_path / 'runs'}", "rounds=1",
        "models=resnet_tiny_32", "teacher.epochs=10", "teacher.batch_size=6", "student.epochs=1",
        "student.batch_size=6", "selection.confidence_threshold=0", "noise.randaugment_magnitude=5"])
    summary = run(config, log=lambda line: None)
    assert summary["rounds"][0]["pseudo_label_accuracy"] is None, "a folder pool has no hidden truth"
    assert 0 <= summary["final_top1"] <= 1


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
        load_unlabeled(tmp_path / "data" / "pool.csv", 16, 3, 0.0, list(COLORS))


def test_manifest_mistakes_name_the_line_and_the_fix(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"path": "x.png"}\nnot json\n')
    with pytest.raises(UserError, match="a.jsonl line 2: not JSON"):
        load_unlabeled(tmp_path / "a.jsonl", 16, 3, 0.0, ["c"])
    (tmp_path / "b.csv").write_text("file,label\nx.png,c\n")
    with pytest.raises(UserError, match="header row with a 'path' column"):
        load_labeled(tmp_path / "b.csv", 16, 3, 0.0)
    (tmp_path / "c.csv").write_text("path,label\nx.png,\n")
    with pytest.raises(UserError, match="every entry of a labeled manifest needs a label"):
        load_labeled(tmp_path / "c.csv", 16, 3, 0.0)
    missing = tmp_path / "d.csv"
    missing.write_text("path\nred/nope.png\n")
    with pytest.raises(UserError, match="1 of 1 images .* red/nope.png"):
        load_unlabeled(missing, 16, 3, 0.0, ["c"])


def write_shard(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards_give_the_folder_ids_and_pixels_and_report_bad_samples(tmp_path):
    make_tree(tmp_path / "pool", 3, seed=6)
    (tmp_path / "pool" / "blue" / "9.jpg").write_bytes(b"\xff\xd8\xff truncated")
    folder, folder_report = load_unlabeled(tmp_path / "pool", 16, 3, 0.5, list(COLORS))
    files = sorted(p.relative_to(tmp_path / "pool").as_posix() for p in (tmp_path / "pool").rglob("*.*"))
    members = [(name, (tmp_path / "pool" / name).read_bytes()) for name in files]
    write_shard(tmp_path / "pool-0.tar", members[:5])
    write_shard(tmp_path / "pool-1.tar", members[5:] + [("green/label-only.txt", b"no image here")])
    shards, report = load_unlabeled(str(tmp_path / "pool-{0..1}.tar"), 16, 3, 0.5, list(COLORS))
    assert shards.ids == folder.ids, "same ids for the same images"
    assert torch.equal(shards.images, folder.images), "same pixels"
    assert [bad for bad, _ in folder_report.bad] == ["blue/9.jpg"]
    assert sorted(bad for bad, _ in report.bad) == ["blue/9.jpg", "green/label-only (no image in the sample)"]
    with pytest.raises(UserError, match=r"pool-2.tar not found \(6 of 8 "):
        load_unlabeled(str(tmp_path / "pool-{0..7}.tar"), 16, 3, 0.5, list(COLORS))
