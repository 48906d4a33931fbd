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
