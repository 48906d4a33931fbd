"""A pool with out-of-domain images (data.ood_fraction) and the energy filter that finds them."""

import dataclasses
import json
from pathlib import Path

import torch

from noisystudent.data import OOD_LABEL, ImageSet, mix_out_of_domain
from noisystudent.pipeline import run


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
    assert filtered["out_of_domain_truth"]["kept"] <= truth["kept"]
