"""Using what a run trained: predictions with class names from the weights alone, the resolved
config as a documented starting point, bundled configs by name."""

import csv
import importlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from noisystudent.cli import main
from noisystudent.config import Config, load_config, to_dict
from noisystudent.data.folder import decode_image
from noisystudent.models import build_model, export_weights, load_exported, predict_logits
from test_folder_data import COLORS, make_tree


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "final.safetensors"
    export_weights(path, build_model("resnet_tiny_32", 3, 3, classes=list(COLORS), image_size=16))
    return path


def test_class_names_and_image_size_travel_with_the_weights(weights):
    spec = load_exported(weights).spec
    assert spec.classes == tuple(COLORS) and spec.image_size == 16


def test_predict_in_python_takes_files_or_their_pixels_and_ranks_by_name(tmp_path, weights):
    from noisystudent import predict

    make_tree(tmp_path / "images", 1, seed=5)
    files = sorted((tmp_path / "images").rglob("*.png"))
    model = load_exported(weights)
    by_file = predict(model, files, top_k=2, batch_size=2)
    pixels = torch.from_numpy(np.stack([decode_image(path, 16, 3) for path in files]))
    assert predict(model, pixels, top_k=2) == by_file
    logits = predict_logits(model, pixels, 8, torch.device("cpu"))
    for ranked, row in zip(by_file, logits.softmax(dim=1)):
        assert [name for name, _ in ranked] == [list(COLORS)[i] for i in row.topk(2).indices]
        assert ranked[0][1] >= ranked[1][1]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_predict_writes_the_top_classes_by_name_with_the_models_own_preprocessing(tmp_path, weights, suffix, capsys):
    make_tree(tmp_path / "images", 3, seed=5)
    (tmp_path / "images" / "red" / "broken.png").write_bytes(b"not a png")
    output = tmp_path / f"predictions{suffix}"
    argv = ["predict", str(weights), str(tmp_path / "images"), "--output", str(output), "--top-k", "2",
            "--max-bad-fraction", "0.2"]
    assert main(argv) == 0
    assert "9 images" in capsys.readouterr().out
    if suffix == ".csv":
        rows = list(csv.DictReader(output.open()))
        got = {r["id"]: ([r["class_1"], r["class_2"]], [float(r["probability_1"]), float(r["probability_2"])]) for r in rows}
    elif suffix == ".jsonl":
        got = {r["id"]: (r["classes"], r["probabilities"]) for r in map(json.loads, output.read_text().splitlines())}
    else:
        table = pq.read_table(output).to_pylist()
        got = {r["id"]: (r["classes"], r["probabilities"]) for r in table}
    assert len(got) == 9 and "red/broken.png" not in got
    model = load_exported(weights)
    image = torch.from_numpy(decode_image(tmp_path / "images" / "blue" / "1.png", 16, 3).copy())[None]
    probs = predict_logits(model, image, 1, torch.device("cpu")).softmax(1)[0]
    top = probs.topk(2)
    assert got["blue/1.png"][0] == [list(COLORS)[i] for i in top.indices.tolist()]
    assert got["blue/1.png"][1] == pytest.approx(top.values.tolist(), abs=1e-5)
    listed = (tmp_path / f"predictions{suffix}.undecodable.csv").read_text()
    assert "red/broken.png" in listed
    assert main(argv) == 2 and "pass --overwrite" in capsys.readouterr().err, "an existing output is kept"
    assert main(argv + ["--overwrite"]) == 0


def test_predict_in_bf16_ranks_like_fp32_within_bf16_rounding(tmp_path, weights):
    """`--precision bf16` really runs the model in bf16 (its probabilities are not fp32's) and
    lands within bf16's rounding of fp32's."""
    make_tree(tmp_path / "images", 3, seed=5)
    by_precision = {}
    for precision in ("fp32", "bf16"):
        output = tmp_path / f"{precision}.jsonl"
        assert main(["predict", str(weights), str(tmp_path / "images"), "--output", str(output), "--top-k", "3",
                     "--precision", precision]) == 0
        by_precision[precision] = {r["id"]: r["probabilities"] for r in map(json.loads, output.read_text().splitlines())}
    fp32, bf16 = by_precision["fp32"], by_precision["bf16"]
    assert fp32.keys() == bf16.keys() and len(fp32) == 9
    assert all(bf16[i] == pytest.approx(fp32[i], abs=0.03) for i in fp32)
    assert any(bf16[i] != fp32[i] for i in fp32)

def test_predict_refuses_what_it_cannot_use_and_leaves_no_partial_output(tmp_path, weights, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "not-weights.safetensors").write_bytes(b"\x00" * 64)
    make_tree(tmp_path / "images", 1, seed=6)
    for name in ("red", "green"):
        (tmp_path / "images" / name / "0.png").write_bytes(b"broken")
    cases = [
        ([str(weights), str(tmp_path / "empty")], "holds no images"),
        ([str(tmp_path / "not-weights.safetensors"), str(tmp_path / "images")], "not a readable safetensors file"),
        ([str(weights), str(tmp_path / "images")], "2 of 3 images .* could not be decoded"),
    ]
    for args, message in cases:
        assert main(["predict", *args, "--output", str(tmp_path / "out.csv")]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and __import__("re").search(message, err), err
        assert not (tmp_path / "out.csv").exists() and not list(tmp_path.glob(".out.csv.*.tmp"))
    assert main(["predict", str(weights), str(tmp_path / "images"), "--output", str(tmp_path / "out.txt")]) == 2


def test_config_prints_every_field_documented_and_reads_back_the_same(tmp_path, capsys):
    assert main(["config"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "mine.yaml").write_text(text)
    assert to_dict(load_config(tmp_path / "mine.yaml")) == to_dict(Config())
    assert "  confidence_threshold: 0.3  # drop images whose max probability is below (paper 0.3)" in text
    assert main(["config", "demo", "student.unlabeled_ratio=7"]) == 0
    (tmp_path / "demo.yaml").write_text(capsys.readouterr().out)
    demo = load_config(tmp_path / "demo.yaml")
    assert demo.student.unlabeled_ratio == 7 and demo.noise.randaugment_pixels == "relative", "the bundled demo"


def test_run_takes_a_bundled_config_by_name(monkeypatch, tmp_path):
    from noisystudent import cli

    seen = []
    monkeypatch.setattr("noisystudent.pipeline.run", lambda config: seen.append(config) or {})
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert cli.main(["run", "smoke", "rounds=1"]) == 0
    assert seen[0].name == load_config(cli.bundled_config("smoke")).name and seen[0].rounds == 1


@pytest.mark.parametrize("name", ["resnet_tiny_32", "efficientnet-b0"])
def test_onnx_export_matches_pytorch_on_real_images_at_any_batch_size(tmp_path, name, capsys):
    import onnx
    import onnxruntime

    torch.manual_seed(0)
    export_weights(tmp_path / "w.safetensors", build_model(name, 3, 3, classes=list(COLORS), image_size=40))
    assert main(["export", str(tmp_path / "w.safetensors"), "--format", "onnx"]) == 0
    path = tmp_path / "w.onnx"
    assert capsys.readouterr().out.strip() == str(path)
    make_tree(tmp_path / "images", 2, seed=7)
    images = torch.stack([torch.from_numpy(decode_image(p, 40, 3).copy()) for p in sorted((tmp_path / "images").rglob("*.png"))])
    model = load_exported(tmp_path / "w.safetensors")
    expected = predict_logits(model, images, 8, torch.device("cpu"))
    session = onnxruntime.InferenceSession(str(path))
    for batch in (images[:1], images):  # a dynamic batch axis
        (got,) = session.run(None, {"images": batch.float().div(255).numpy()})
        assert abs(got - expected[:len(batch)].numpy()).max() <= 1e-4
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    description = json.loads(metadata["noisystudent"])
    assert description["classes"] == list(COLORS) and description["image_size"] == 40


def test_torchscript_export_runs_without_noisystudent_and_carries_the_description(tmp_path, weights):
    assert main(["export", str(weights), "--format", "torchscript", "--output", str(tmp_path / "m.pt")]) == 0
    files = {"noisystudent.json": ""}
    scripted = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=files)
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(scripted(x), load_exported(weights).eval()(x), atol=1e-5)
    assert json.loads(files["noisystudent.json"])["classes"] == list(COLORS)
    assert main(["export", str(weights), "--format", "torchscript", "--output", str(tmp_path / "m.pt")]) == 2

def test_two_torchscript_exports_of_one_model_are_the_same_bytes(tmp_path, weights):
    import subprocess
    import sys

    for name in ("one.pt", "two.pt"):  # in two processes: within one, TorchScript renames a class traced again
        subprocess.run([sys.executable, "-m", "noisystudent.cli", "export", str(weights), "--format", "torchscript",
                        "--output", str(tmp_path / name)], check=True, capture_output=True)
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two.pt").read_bytes()


def test_predict_resumes_by_chunk_and_never_joins_parts_of_other_weights(tmp_path, weights, monkeypatch, capsys):
    """Stopped after its first chunk, a rerun predicts only the missing chunks and writes the
    file a straight run writes; parts left by other weights are discarded, not joined."""
    # the module, not the `predict` function the package exports under its name
    predict_module = importlib.import_module("noisystudent.predict")
    make_tree(tmp_path / "images", 3, seed=5)  # 9 images: chunks of 4, 4, 1
    argv = lambda out: ["predict", str(weights), str(tmp_path / "images"), "--output", str(out),  # noqa: E731
                        "--chunk-size", "4"]
    assert main(argv(tmp_path / "straight.csv")) == 0
    real_writer, calls = predict_module._PredictionWriter.write, []

    def stop_after_one_chunk(self, *args):
        calls.append(self.path)
        if len(set(calls)) > 1:
            raise KeyboardInterrupt("stopped")
        return real_writer(self, *args)
    monkeypatch.setattr(predict_module._PredictionWriter, "write", stop_after_one_chunk)
    assert main(argv(tmp_path / "resumed.csv")) == 130
    parts = tmp_path / "resumed.csv.parts"
    assert sorted(p.name for p in parts.glob("chunk-*")) == ["chunk-00000.csv", "chunk-00000.json"]
    monkeypatch.setattr(predict_module._PredictionWriter, "write", real_writer)
    (parts / "chunk-00000.csv").write_text("id,class_1\nplanted,row\n")  # what a rerun must reuse, not redo
    assert main(argv(tmp_path / "resumed.csv")) == 0 and "planted" in (tmp_path / "resumed.csv").read_text()
    # parts another model left: discarded, not joined
    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    export_weights(other, build_model("resnet_tiny_32", 3, 3, classes=list(COLORS), image_size=16))
    calls.clear()
    monkeypatch.setattr(predict_module._PredictionWriter, "write", stop_after_one_chunk)
    assert main(["predict", str(other), *argv(tmp_path / "again.csv")[2:]]) == 130
    monkeypatch.setattr(predict_module._PredictionWriter, "write", real_writer)
    assert main(argv(tmp_path / "again.csv")) == 0
    assert (tmp_path / "again.csv").read_bytes() == (tmp_path / "straight.csv").read_bytes()
    assert not (tmp_path / "again.csv.parts").exists(), "parts are removed once joined"
