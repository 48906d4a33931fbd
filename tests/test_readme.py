"""README stays true: its numbers come from committed benchmark results, and its code runs."""

import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import results_table  # noqa: E402


def test_readme_results_block_is_rendered_from_the_committed_json():
    text = (ROOT / "README.md").read_text()
    block = text.split(results_table.START, 1)[1].split(results_table.END, 1)[0].strip()
    assert block == results_table.render().strip(), "run: python benchmarks/results_table.py --write"


def test_readme_loads_weights_with_timm_alone(tmp_path):
    import re

    import torch

    from noisystudent.models import build_model, export_weights

    text = (Path(__file__).parents[1] / "README.md").read_text()
    snippet = re.search(r"loads with timm alone.*?```python\n(.*?)```", text, re.S).group(1)
    torch.manual_seed(0)
    model = build_model("efficientnet-b0", 4, 3, classes=list("abcd"), image_size=64).eval()
    export_weights(tmp_path / "final.safetensors", model)
    images = torch.rand(2, 3, 64, 64)
    namespace = {"images": images}
    exec(snippet.replace("runs/my-run/round-1/student/final.safetensors", str(tmp_path / "final.safetensors")), namespace)
    with torch.no_grad():
        assert torch.allclose(namespace["logits"], model(images), atol=1e-5)


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
