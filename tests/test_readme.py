"""README and docs stay true: their numbers come from committed benchmark results, and the
README's Python runs as written, in a fresh interpreter, as a user would run it."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import noisystudent
from noisystudent.data.images import decode_image
from noisystudent.models import build_model, export_weights

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import results_table  # noqa: E402

README_LINES = 250  # a user's guide: the rest lives in docs/


@pytest.mark.parametrize("block", list(results_table.BLOCKS))
def test_every_results_block_is_rendered_from_the_committed_json(block):
    path, _ = results_table.BLOCKS[block]
    written = results_table.block_in(path.read_text(), block)
    assert written == results_table.render(block), "run: python benchmarks/results_table.py --write"


def test_readme_is_a_guide_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_LINES
    for document in ("README.md", *(f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md"))):
        folder = (ROOT / document).parent
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (ROOT / document).read_text()):
            if not target.startswith("http"):
                assert (folder / target).exists(), f"{document} links to {target}, which does not exist"


def test_readme_prose_quotes_no_number_the_results_do_not_give():
    """Outside code and the generated headline, the README states no measured number: a number
    there would go stale when the benchmarks move."""
    text = (ROOT / "README.md").read_text()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    prose = re.sub(r"<!-- headline:start -->.*<!-- headline:end -->", "", prose, flags=re.S)
    assert not re.findall(r"\d+(?:\.\d+)?\s*(?:%|min\b|points|seconds|s\b)", prose)


def python_snippet(after: str) -> str:
    """The README's first ```python block after the line `after`, verbatim."""
    text = (ROOT / "README.md").read_text()
    return re.search(re.escape(after) + r"\n.*?```python\n(.*?)```", text, re.S).group(1)


def fresh_interpreter(arguments: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """A new Python process importing this checkout (the environment may hold another install)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, *arguments], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=600)


# the demo's final model (1 channel, Fashion-MNIST's 32 px) and EfficientNet-B0 on RGB images
@pytest.mark.parametrize("name, channels, image_size", [("resnet_medium_32", 1, 32), ("efficientnet-b0", 3, 64)])
def test_readme_python_snippet_predicts_in_a_fresh_interpreter(tmp_path, name, channels, image_size):
    torch.manual_seed(0)
    classes = [f"class-{i}" for i in range(10)]
    model = build_model(name, len(classes), channels, classes=classes, image_size=image_size).eval()
    with torch.no_grad():  # classes far apart: their order holds in any precision the new process picks
        model.backbone.get_classifier().bias.copy_(3.0 * torch.arange(len(classes)))
    stage = tmp_path / "runs" / "demo" / "round-2" / "student"
    stage.mkdir(parents=True)
    export_weights(stage / "final.safetensors", model)
    files = ("shirt.png", "boot.png")
    rng = np.random.default_rng(0)
    for file in files:  # not the model's size: predict decodes them as training did
        Image.fromarray(rng.integers(0, 256, (image_size + 9, image_size + 20, 3), dtype=np.uint8)).save(tmp_path / file)
    done = fresh_interpreter(["-c", python_snippet("## Use the model in Python")], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    images = torch.from_numpy(np.stack([decode_image(tmp_path / file, image_size, channels) for file in files]))
    with torch.no_grad():
        expected = model(images.float() / 255).softmax(dim=1).topk(3)
    for file, probabilities, indices in zip(files, expected.values, expected.indices):
        top = ast.literal_eval(printed[file])
        assert [class_name for class_name, _ in top] == [classes[i] for i in indices]
        assert [p for _, p in top] == pytest.approx(probabilities.tolist(), abs=0.02)


def test_the_package_has_a_version_registers_its_models_and_runs_as_a_module():
    done = fresh_interpreter(["-m", "noisystudent", "--version"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"noisystudent {noisystudent.__version__}"
    assert timm.is_model("noisystudent_resnet_small_32") and timm.is_model("noisystudent_efficientnet_l0")


def test_a_pair_with_an_unrecorded_machine_is_not_shown_and_a_close_claim_is_judged_by_its_spread():
    paired = {"mean": 0.01, "std": 0.004, "n": 3}  # 4.3 standard errors from 0: a clear difference
    entry = {"seeds": [0, 1, 2], "paired_seeds": [0, 1, 2], "vs_reference": paired}
    assert results_table.pair({**entry, "machine_by_seed": ["cpu-a"] * 3}) == paired
    assert results_table.pair({**entry, "machine_by_seed": ["unrecorded", "cpu-a", "cpu-a"]}) is None
    assert results_table.pair(entry) == paired, "a carried row: paired against its own reference row"
    assert results_table.verdict(paired, results_table.CLOSE) == "disagrees (> 2 SE)"
    assert results_table.verdict({**paired, "std": 0.02}, results_table.CLOSE) == "agrees (within 2 SE)"
    assert results_table.verdict(paired, -1) == "disagrees (> 2 SE)" and results_table.verdict(paired, +1) == "agrees (> 2 SE)"
    assert results_table.verdict(None, -1) == "no pair on one machine yet"
