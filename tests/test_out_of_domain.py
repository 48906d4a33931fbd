"""A pool with out-of-domain images (data.ood_fraction) and the energy filter that finds them."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from noisystudent.data import OOD_LABEL, ImageSet, mix_out_of_domain
from noisystudent.labels import LabelStore
from noisystudent.pipeline import Pipeline, run


def test_a_mixed_pool_holds_the_asked_share_of_rendered_characters():
    pool = ImageSet(torch.zeros(80, 1, 32, 32, dtype=torch.uint8), torch.arange(80) % 10, [f"p{i}" for i in range(80)],
                    list("abcdefghij"))
    mixed = mix_out_of_domain(pool, 0.2, seed=3)
    out = mixed.labels == OOD_LABEL
    assert len(mixed) == 100 and int(out.sum()) == 20 and all(mixed.ids[i].startswith("ood-") for i in out.nonzero().flatten())
    assert mixed.images[out].float().mean() > 5 and mixed.images[~out].max() == 0, "characters drawn, padded to 32 px"
    assert not out[:20].all(), "shuffled in, not appended"
    again = mix_out_of_domain(pool, 0.2, seed=3)
    assert again.ids == mixed.ids and torch.equal(again.images, mixed.images)


def test_a_run_on_a_mixed_pool_counts_and_filters_the_out_of_domain_images(tiny_config):
    """The label stage counts them and keeps them out of the pseudo-label accuracy; the selection
    estimates their share from the teacher alone, and the filter keeps fewer images than the
    confidence threshold alone."""
    config = dataclasses.replace(tiny_config, data=dataclasses.replace(tiny_config.data, ood_fraction=0.25))
    run(config, log=lambda line: None)
    folder = Path(tiny_config.runs_dir) / "tiny" / "round-1"
    labels = json.loads((folder / "labels" / "stats.json").read_text())
    assert labels["out_of_domain_in_pool"] == round(0.25 / 0.75 * 500) and labels["pseudo_label_accuracy"] > 0.2
    plain = json.loads((folder / "selection" / "stats.json").read_text())
    assert plain["out_of_domain"]["dropped"] is False and 0 <= plain["out_of_domain"]["estimated_share"] <= 1
    truth = plain["out_of_domain_truth"]
    assert truth["in_pool"] == labels["out_of_domain_in_pool"] and truth["kept"] + truth["kept_in_domain"] == plain["kept"]
    filtered_config = dataclasses.replace(config, name="filtered",
                                          selection=dataclasses.replace(config.selection, ood_quantile=0.5))
    run(filtered_config, log=lambda line: None)
    filtered = json.loads((Path(tiny_config.runs_dir) / "filtered" / "round-1" / "selection" / "stats.json").read_text())
    assert filtered["out_of_domain"]["dropped"] is True and filtered["kept"] < plain["kept"]
    # a filter that drops at random keeps the same share of out-of-domain images; this one keeps less
    assert filtered["out_of_domain_truth"]["kept"] / filtered["kept"] < truth["kept"] / plain["kept"] / 2
    # The score separates: 167 out-of-domain images among 500, so a random score's AUROC is 0.5 with a
    # standard deviation of 0.026; the teacher's energy measured 0.88 here.
    store = LabelStore(folder / "labels")
    pool = Pipeline(config).unlabeled
    assert list(store.column("id")) == pool.images.ids, "a store row per pool image, in order"
    assert auroc(store.column("energy"), pool.truth == OOD_LABEL) > 0.7


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """The chance that a positive scores above a negative (Mann-Whitney U over both counts)."""
    ranks = np.empty(len(score))
    ranks[np.argsort(score, kind="stable")] = np.arange(1, len(score) + 1)
    positives, negatives = int(positive.sum()), int((~positive).sum())
    return (ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives)


def test_auroc_is_one_for_a_separating_score_and_a_half_for_a_random_one():
    positive = np.arange(2000) % 4 == 0
    assert auroc(positive.astype(float), positive) == 1.0
    assert abs(auroc(np.random.default_rng(0).random(2000), positive) - 0.5) < 0.05
