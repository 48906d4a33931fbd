"""README's numbers come from committed benchmark results, not from memory."""

import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import results_table  # noqa: E402


def test_readme_results_block_is_rendered_from_the_committed_json():
    text = (ROOT / "README.md").read_text()
    block = text.split(results_table.START, 1)[1].split(results_table.END, 1)[0].strip()
    assert block == results_table.render().strip(), "run: python benchmarks/results_table.py --write"
