"""benchmarks/method_margin.py: the demo against the best supervised schedule, paired by seed."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import method_margin  # noqa: E402


def variant(by_seed: dict[int, float]) -> dict:
    values = list(by_seed.values())
    return {"seeds": list(by_seed), "final_top1_by_seed": values, "final_top1": {"mean": sum(values) / len(values)}}


def test_pairs_by_seed_against_the_best_supervised_variant():
    demo = {"seeds": {"0": {"final_top1": 0.91}, "1": {"final_top1": 0.90}, "2": {"final_top1": 0.92}}}
    plateau = {"variants": {"short": variant({0: 0.85, 1: 0.86, 2: 0.84}),
                            "long": variant({0: 0.89, 1: 0.885, 2: 0.90}),
                            "unfinished": {"seeds": [], "final_top1_by_seed": []}}}
    result = method_margin.margin(demo, plateau)
    assert result["baseline_variant"] == "long"
    assert [pair["difference_points"] for pair in result["pairs"]] == [2.0, 1.5, 2.0]
    assert result["margin_mean"] == pytest.approx(1.83, abs=0.01)
    assert result["margin_se"] == pytest.approx(0.17, abs=0.01)  # std 0.29 over sqrt(3) pairs
    assert result["target_met"] and not result["partial"]


def test_a_margin_within_its_noise_or_without_three_pairs_does_not_meet_the_target():
    plateau = {"variants": {"long": variant({0: 0.89, 1: 0.89, 2: 0.89})}}
    noisy = {"seeds": {"0": {"final_top1": 0.93}, "1": {"final_top1": 0.88}, "2": {"final_top1": 0.92}}}
    assert not method_margin.margin(noisy, plateau)["target_met"]  # mean +2.0, but se 1.53
    two = {"seeds": {"0": {"final_top1": 0.92}, "1": {"final_top1": 0.92}}}
    result = method_margin.margin(two, plateau)
    assert result["partial"] and not result["target_met"]


def sweep_variant(by_seed: dict[int, float], machine: str = "m1") -> dict:
    return {**variant(by_seed), "machine_by_seed": [machine] * len(by_seed)}


def test_a_sweep_margin_pairs_the_best_supervised_variant_among_those_paired_on_the_most_seeds():
    table = {"sweep_file": "s.yaml", "reference": "method", "variants": {
        "method": sweep_variant({0: 0.80, 1: 0.78, 2: 0.79}),
        "short": sweep_variant({0: 0.77, 1: 0.75, 2: 0.76}),
        "long": sweep_variant({0: 0.775, 1: 0.755, 2: 0.765}),
        "lucky": sweep_variant({0: 0.79})}}  # best mean, but on one seed only
    result = method_margin.sweep_margin(table)
    assert result["baseline_variant"] == "long" and result["baseline_seeds"] == [0, 1, 2]
    assert [pair["difference_points"] for pair in result["pairs"]] == [2.5, 2.5, 2.5]
    assert result["margin_se"] == 0.0 and result["target_met"]


def test_a_sweep_margin_never_pairs_runs_from_other_or_unrecorded_machines():
    table = {"sweep_file": "s.yaml", "reference": "method", "variants": {
        "method": sweep_variant({0: 0.80, 1: 0.78, 2: 0.79}),
        "elsewhere": sweep_variant({0: 0.70, 1: 0.70, 2: 0.70}, machine="m2"),
        "unrecorded": sweep_variant({0: 0.70, 1: 0.70, 2: 0.70}, machine="unrecorded")}}
    result = method_margin.sweep_margin(table)
    assert result["baseline_variant"] is None and result["pairs"] == [] and not result["target_met"]
    table["variants"]["here"] = {**sweep_variant({0: 0.77, 1: 0.75}), "machine_by_seed": ["m1", "m2"]}
    result = method_margin.sweep_margin(table)
    assert result["baseline_variant"] == "here" and [pair["seed"] for pair in result["pairs"]] == [0]
    assert result["partial"] and not result["target_met"]
