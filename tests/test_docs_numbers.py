"""Every measured number in the docs' prose comes from a committed result (issue #33).

The generated blocks (`<!-- name:start -->` ... `<!-- name:end -->`) are rendered from the JSON by
benchmarks/results_table.py and checked against it in test_readme.py. Prose around them is written
by hand, and hand-copied numbers drift when a result is regenerated. So each number with a unit in
the prose must appear, at the precision it is quoted, among the numbers of benchmarks/results/
(as a fraction shown in percent or points, or as is). Whole numbers are weakly checked (some
result nearly always gives one); the ones with decimals, which drift, are what this catches.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
QUOTED = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s*(%|min\b|points\b|seconds\b|s\b)")


def committed_numbers() -> list[float]:
    """Every number in benchmarks/results/**/*.json: numeric leaves and numbers inside strings."""
    numbers = []

    def walk(value):
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            numbers.append(float(value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            numbers.extend(float(text) for text in re.findall(r"\d+(?:\.\d+)?", value))

    for path in (ROOT / "benchmarks" / "results").rglob("*.json"):
        walk(json.loads(path.read_text()))
    return numbers


def prose(text: str) -> str:
    """The hand-written part: without code blocks, generated blocks and Markdown tables."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"<!-- (\S+):start -->.*?<!-- \1:end -->", "", text, flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("|"))


def sourced(quoted: str, committed: list[float]) -> bool:
    """Does some committed number give `quoted` when shown at its precision (as is, or x100)?"""
    value = float(quoted.replace(",", ""))
    decimals = len(quoted.split(".")[1]) if "." in quoted else 0
    half_unit = 0.5 * 10 ** -decimals + 1e-9
    return any(abs(abs(number) * scale - value) <= half_unit for number in committed for scale in (1, 100))


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_every_number_in_the_prose_is_a_committed_result(doc):
    committed = committed_numbers()
    unsourced = [match.group(0) for match in QUOTED.finditer(prose(doc.read_text()))
                 if not sourced(match.group(1), committed)]
    assert not unsourced, (f"{doc.name} quotes numbers no committed result gives: {unsourced}. Quote them from "
                           "benchmarks/results/*.json (or commit the result they come from), or leave them out")


def test_the_check_finds_a_number_no_result_gives():
    committed = [0.8879, 44.5]
    assert sourced("88.79", committed) and sourced("44.5", committed) and not sourced("88.80", committed)
    found = [match.group(1) for match in QUOTED.finditer(prose("ended at 88.79% in 1,903 s\n| 12% |"))]
    assert found == ["88.79", "1,903"], "tables are generated; a thousands separator is one number"
