"""A pool with out-of-domain images (data.ood_fraction), the scores that find them
(labels/ood.py), the share estimate and the filter."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from noisystudent.config import LabelConfig, load_config
from noisystudent.data import OOD_LABEL, ImageSet, hold_out_reference, memory_pool, mix_out_of_domain
from noisystudent.errors import ConfigError, UserError
from noisystudent.labels import LabelStore, pseudo_label
from noisystudent.labels.ood import FEATURE_SCORES, OOD_SCORES, auroc, estimate_share, fit_ood_score
from noisystudent.models import build_model
from noisystudent.models.airnet import LOGIT_SCALE
from noisystudent.pipeline import Pipeline, run


@pytest.mark.parametrize("source", ["characters", "strokes"])
def test_a_mixed_pool_holds_the_asked_share_of_out_of_domain_images(source):
    pool = ImageSet(torch.zeros(80, 1, 32, 32, dtype=torch.uint8), torch.arange(80) % 10, [f"p{i}" for i in range(80)],
                    list("abcdefghij"))
    mixed = mix_out_of_domain(pool, 0.2, seed=3, source=source)
    out = mixed.labels == OOD_LABEL
    assert len(mixed) == 100 and int(out.sum()) == 20 and all(mixed.ids[i].startswith("ood-") for i in out.nonzero().flatten())
    assert mixed.images[out].float().mean() > 5 and mixed.images[~out].max() == 0, "drawn, padded to 32 px"
    assert not out[:20].all(), "shuffled in, not appended"
    again = mix_out_of_domain(pool, 0.2, seed=3, source=source)
    assert again.ids == mixed.ids and torch.equal(again.images, mixed.images)


def test_a_run_on_a_mixed_pool_counts_and_filters_the_out_of_domain_images(tiny_config):
    """The label stage counts them and keeps them out of the pseudo-label accuracy; the selection
    estimates their share from the teacher alone, and the filter keeps fewer images than the
    confidence threshold alone."""
    config = dataclasses.replace(tiny_config, data=dataclasses.replace(tiny_config.data, ood_fraction=0.25,
                                                                       reference_fraction=0.1))
    run(config, log=lambda line: None)
    folder = Path(tiny_config.runs_dir) / "tiny" / "round-1"
    labels = json.loads((folder / "labels" / "stats.json").read_text())
    assert labels["out_of_domain_in_pool"] == round(0.25 / 0.75 * 500) and labels["pseudo_label_accuracy"] > 0.2
    assert len(np.load(folder / "labels" / "reference_scores.npy")) == 10, "one held-out image per class"
    plain = json.loads((folder / "selection" / "stats.json").read_text())
    assert plain["out_of_domain"]["dropped"] is False and 0 <= plain["out_of_domain"]["estimated_share"] <= 1
    assert plain["out_of_domain"]["score"] == "feature_ensemble" and plain["dropped_out_of_domain"] == 0
    flagged = (folder / "selection" / "out_of_domain.csv").read_text().splitlines()
    assert len(flagged) == 1 + plain["out_of_domain"]["above"]
    truth = plain["out_of_domain_truth"]
    assert truth["in_pool"] == labels["out_of_domain_in_pool"] and truth["kept"] + truth["kept_in_domain"] == plain["kept"]
    filtered_config = dataclasses.replace(config, name="filtered",
                                          selection=dataclasses.replace(config.selection, ood_quantile=0.5))
    lines = []
    run(filtered_config, log=lines.append)
    filtered = json.loads((Path(tiny_config.runs_dir) / "filtered" / "round-1" / "selection" / "stats.json").read_text())
    assert filtered["out_of_domain"]["dropped"] is True and filtered["kept"] < plain["kept"]
    assert filtered["out_of_domain_truth"]["kept"] <= truth["kept"]
    # a filter that drops at random keeps the same share of out-of-domain images; this one keeps less
    assert filtered["out_of_domain_truth"]["kept"] / filtered["kept"] < truth["kept"] / plain["kept"] / 2
    dropped = filtered["dropped_out_of_domain"]
    assert dropped == filtered["out_of_domain"]["above"] > 0
    assert dropped == sum(c["dropped_out_of_domain"] for c in filtered["per_class"])
    assert filtered["pool"] == dropped + filtered["dropped_low_confidence"] + filtered["kept"]
    assert any(f"{dropped} dropped as out of domain" in line and "est. out of domain" in line for line in lines), lines
    # The score separates: 167 out-of-domain images among 500, so a random score's AUROC is 0.5 with a
    # standard deviation of 0.026
    store = LabelStore(folder / "labels")
    pool = Pipeline(config).unlabeled
    assert list(store.column("id")) == pool.images.ids, "a store row per pool image, in order"
    out = pool.truth == OOD_LABEL
    assert auroc(store.column("ood_score")[~out], store.column("ood_score")[out]) > 0.7


def test_auroc_is_the_share_of_out_in_pairs_ordered_right_ties_half():
    rng = np.random.default_rng(0)
    inside, outside = rng.integers(0, 5, 40).astype(float), rng.integers(2, 8, 30).astype(float)
    pairs = (outside[None] > inside[:, None]).mean() + 0.5 * (outside[None] == inside[:, None]).mean()
    assert auroc(inside, outside) == pytest.approx(pairs)
    assert auroc(np.zeros(3), np.ones(2)) == 1 and auroc(np.ones(3), np.zeros(2)) == 0
    assert auroc(np.ones(3), np.ones(2)) == 0.5


def clusters(rng, count, centers):
    labels = rng.integers(0, len(centers), count)
    return torch.tensor(centers[labels] + rng.normal(0, 1, (count, centers.shape[1])), dtype=torch.float32), \
        torch.as_tensor(labels)


@pytest.mark.parametrize("name", OOD_SCORES)
def test_every_score_ranks_an_unseen_cluster_above_new_in_domain_points_better_than_chance(name):
    """Features: 4 classes in 16 dimensions, spread along the first 4; out of domain: a cluster
    along another axis, which a classifier reading the first 4 coordinates sees as weak logits.
    Each score beats a random one (AUROC 0.5) by a wide margin on new seeded draws."""
    rng = np.random.default_rng(0)
    centers = np.zeros((4, 16))
    centers[np.arange(4), np.arange(4)] = 6.0
    train, labels = clusters(rng, 400, centers)
    inside, _ = clusters(rng, 300, centers)
    outside = torch.tensor(rng.normal(0, 1, (300, 16)) + np.eye(16)[8] * 6.0, dtype=torch.float32)
    head = lambda features: features[:, :4] * 2.0  # noqa: E731  a linear classifier of the 4 classes
    # the stem's view (feature_ensemble): the same points, so the test reads the penultimate part
    score = fit_ood_score(name, train if name in FEATURE_SCORES else None, labels if name in FEATURE_SCORES else None,
                          train)
    value = auroc(score(inside, head(inside), inside).numpy(), score(outside, head(outside), outside).numpy())
    chance = auroc(rng.random(300), rng.random(300))
    assert value > 0.9 and abs(chance - 0.5) < 0.1, (value, chance)


def test_the_feature_ensemble_finds_what_only_the_stem_sees():
    """Out-of-domain points whose penultimate features look like new in-domain ones (a classifier
    maps them onto its classes) but whose low-level statistics (the stem's spread) lie off every
    class's, along the directions the classes differ in (relative Mahalanobis subtracts the
    distance to all classes as one Gaussian, so a shift along directions that no class varies in
    would cancel; real stems do vary by class, docs/ood.md): the penultimate score
    ranks them at chance, the ensemble nearly perfectly; and
    on points off in the penultimate features only, the ensemble keeps most of that score's
    ranking (the stem part adds noise, not a veto). Seeded draws; margins far above their spread."""
    rng = np.random.default_rng(1)
    centers = np.zeros((4, 16))
    centers[np.arange(4), np.arange(4)] = 6.0
    stem_centers = np.zeros((4, 8))
    stem_centers[np.arange(4), np.arange(4)] = 4.0
    train, labels = clusters(rng, 600, centers)
    train_stem = torch.tensor(stem_centers[labels.numpy()] + rng.normal(0, 1, (600, 8)), dtype=torch.float32)
    reference, _ = clusters(rng, 100, centers)
    reference_stem, _ = clusters(rng, 100, stem_centers)
    inside, _ = clusters(rng, 300, centers)
    inside_stem, _ = clusters(rng, 300, stem_centers)
    lookalike, _ = clusters(rng, 300, centers)
    off_stem = torch.tensor(rng.normal(0, 1, (300, 8)) - 5.0 * (np.arange(8) < 4), dtype=torch.float32)
    off_features = torch.tensor(rng.normal(0, 1, (300, 16)) + np.eye(16)[8] * 6.0, dtype=torch.float32)
    head = lambda features: features[:, :4] * 2.0  # noqa: E731

    ensemble = fit_ood_score("feature_ensemble", train, labels, train_stem, (reference, reference_stem))
    penultimate = fit_ood_score("relative_mahalanobis", train, labels)

    def ranks(score, features, stem):
        return auroc(score(inside, head(inside), inside_stem).numpy(), score(features, head(features), stem).numpy())

    assert ranks(penultimate, lookalike, off_stem) < 0.6 and ranks(ensemble, lookalike, off_stem) > 0.98
    assert ranks(penultimate, off_features, inside_stem) > 0.98 and ranks(ensemble, off_features, inside_stem) > 0.9
    # standardized on the reference: each part's reference scores have mean 0 and std 1
    parts = [part(view, head(reference)) for part, view in zip(ensemble.parts, (reference, reference_stem))]
    for values, (mean, std) in zip(parts, ensemble.standardize.tolist()):
        assert abs(float(values.double().mean()) - mean) < 1e-4 * std and abs(float(values.double().std()) - std) < 1e-4 * std


def test_an_unknown_score_is_refused():
    with pytest.raises(UserError, match="not one of energy"):
        fit_ood_score("entropy")


@pytest.mark.parametrize("share", [0.0, 0.05, 0.2, 0.5])
def test_the_share_estimate_recovers_the_truth_within_its_interval(share):
    """In-domain scores N(0, 1) (the reference: 1,000 new draws), out of domain N(5, 1): the
    estimate is within 3 points, its interval holds the truth; a pure in-domain pool estimates ~0."""
    rng = np.random.default_rng(1)
    reference = rng.normal(0, 1, 1000)
    inside = rng.normal(0, 1, 4000)
    outside = rng.normal(5, 1, round(share / (1 - share) * 4000))
    pool = np.concatenate([inside, outside])
    cut = np.quantile(reference, 0.8)
    estimate = estimate_share(float((pool <= cut).mean()), len(pool), reference, cut)
    low, high = estimate["interval"]
    assert abs(estimate["estimated_share"] - share) < 0.03 and low <= share <= high, estimate
    assert high - low < 0.1


def test_the_reference_is_held_out_of_each_class_seeded_and_disjoint():
    labeled = ImageSet(torch.zeros(50, 1, 8, 8, dtype=torch.uint8), torch.arange(50) % 5, [f"l{i}" for i in range(50)],
                       list("abcde"))
    train, reference = hold_out_reference(labeled, 0.2, seed=0)
    assert len(reference) == 10 and (reference.labels.bincount(minlength=5) == 2).all()
    assert set(train.ids).isdisjoint(reference.ids) and len(train) + len(reference) == 50
    assert hold_out_reference(labeled, 0.2, seed=0)[1].ids == reference.ids
    assert hold_out_reference(labeled, 0.0, seed=0) == (labeled, None)
    assert len(hold_out_reference(labeled, 0.95, seed=0)[0]) == 5, "each class keeps one image to train on"


def test_a_filter_without_a_reference_is_refused():
    with pytest.raises(ConfigError, match="needs data.reference_fraction > 0"):
        load_config(overrides=["data.reference_fraction=0", "selection.ood_quantile=0.95"])


def test_a_store_of_the_old_format_is_refused_with_the_reason(tmp_path):
    (tmp_path / "header.json").write_text(json.dumps({"teacher_sha256": "", "temperature": 1.0}))
    pool = memory_pool(ImageSet(torch.zeros(4, 1, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long),
                                [f"u{i}" for i in range(4)], list("abc")), "pool")
    with pytest.raises(UserError, match="format 1 .before out-of-domain scores"):
        pseudo_label(build_model("resnet_tiny_32", 3, 1), pool, LabelConfig(), tmp_path, torch.device("cpu"))


@pytest.mark.parametrize("name", ["mahalanobis", "feature_ensemble"])
def test_the_store_keeps_the_fitted_score_and_the_reference_scores(tmp_path, name):
    """A feature score is computed from the same forward pass as the logits (feature_ensemble: and
    the stem's spread, standardized on the reference); the reference is scored into
    reference_scores.npy; the header names the score: what the selection reads."""
    torch.manual_seed(0)
    model = build_model("resnet_tiny_32", 3, 1)
    images = torch.randint(0, 256, (24, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labeled = ImageSet(images[:12], torch.arange(12) % 3, [f"l{i}" for i in range(12)], list("abc"))
    reference = ImageSet(images[12:15], torch.arange(3), [f"r{i}" for i in range(3)], list("abc"))
    pool = memory_pool(ImageSet(images[15:], torch.zeros(9, dtype=torch.long), [f"u{i}" for i in range(9)],
                                list("abc")), "pool")
    store = pseudo_label(model, pool, LabelConfig(ood_score=name, shard_size=4), tmp_path, torch.device("cpu"),
                         labeled=labeled, reference=reference)
    from noisystudent.labels.ood import fit_on_images, score_images
    score = fit_on_images(name, model, labeled.images, labeled.labels, 8, torch.device("cpu"), reference.images)
    assert np.allclose(store.column("ood_score"), score_images(model, images[15:], score, 8, torch.device("cpu")),
                       rtol=1e-4)
    assert np.allclose(store.reference_scores, score_images(model, reference.images, score, 8, torch.device("cpu")),
                       rtol=1e-4)
    assert json.loads((tmp_path / "header.json").read_text())["ood_score"] == name
    if name == "feature_ensemble":
        assert abs(float(np.mean(store.reference_scores))) < 1e-3, "each part has mean 0 on the reference"


def test_a_score_computes_in_fp32_inside_a_bf16_autocast():
    """Labeling runs the teacher under bf16 autocast where the CPU has bf16 units; the score
    must not inherit it (it failed to store, and would round distances)."""
    rng = np.random.default_rng(0)
    features = torch.tensor(rng.normal(0, 1, (64, 8)), dtype=torch.float32)
    labels = torch.arange(64) % 4
    score = fit_ood_score("relative_mahalanobis", features, labels)
    plain = score(features, features[:, :4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = score(features.bfloat16(), features[:, :4].bfloat16())
    assert inside.dtype == torch.float32 and torch.allclose(inside, plain, rtol=0.05, atol=0.05)


def test_the_new_fields_at_their_defaults_leave_every_stages_inputs_as_before():
    """A run directory made before the out-of-domain reference resumes and skips: at the values
    such runs had, data.reference_fraction, data.ood_source and labels.ood_score
    (relative_mahalanobis, the default until feature_ensemble) are in no stage's inputs (so no
    fingerprint changes); set otherwise, they are, and they redo what they change: the new default
    score relabels (its store holds other scores) but retrains no teacher."""
    from noisystudent.config import DataConfig, LabelConfig as Labels
    from noisystudent.stages import plan_run
    from noisystudent.stages.inputs import NEW_DATA_INPUTS
    from noisystudent.stages.labels import NEW_LABEL_INPUTS

    assert NEW_DATA_INPUTS == {key: getattr(DataConfig(), key) for key in NEW_DATA_INPUTS}
    assert NEW_LABEL_INPUTS == {"ood_score": "relative_mahalanobis"} and Labels().ood_score == "feature_ensemble"
    assert DataConfig().reference_fraction == 0, "opt-in: no labels are held out unless asked"
    before = plan_run(load_config(overrides=["labels.ood_score=relative_mahalanobis"]))
    for stage in before.stages():
        text = json.dumps(stage.inputs)
        assert not any(f'"{key}"' in text for key in ("reference_fraction", "ood_source", "ood_score")), stage.path
    plan = plan_run(load_config())
    assert plan.teacher.inputs_hash == before.teacher.inputs_hash
    assert plan.rounds[0].labels.inputs_hash != before.rounds[0].labels.inputs_hash
    held_out = plan_run(load_config(overrides=["data.reference_fraction=0.1"]))
    assert held_out.teacher.inputs_hash != plan.teacher.inputs_hash, "the teacher trains on fewer labels"
    scored = plan_run(load_config(overrides=["labels.ood_score=energy"]))
    assert scored.teacher.inputs_hash == plan.teacher.inputs_hash
    assert scored.rounds[0].labels.inputs_hash != plan.rounds[0].labels.inputs_hash


@pytest.mark.parametrize("name", ["resnet_tiny_32", "airnet_small_32"])
def test_features_are_the_penultimate_ones_and_the_logits_forwards(name):
    """The feature scores read the pooled features before the classifier; the logits that come
    with them are the model's own (AirNet scales its classifier's output)."""
    torch.manual_seed(0)
    model = build_model(name, 10, 1).eval()
    images = torch.rand(6, 1, 32, 32)
    with torch.no_grad():
        features, logits = model.features_and_logits(images)
        backbone = model.backbone
        trunk = backbone.forward_features(model.prepare(images))
        assert features.shape == (6, backbone.num_features) and trunk.dim() == 4
        pooled = torch.nn.functional.adaptive_max_pool2d(trunk, 1) if name.startswith("airnet") else trunk.mean((2, 3))
        assert torch.allclose(features, pooled.flatten(1), atol=1e-6)
        assert torch.allclose(logits, model(images), atol=1e-6)
        assert torch.allclose(model.features(images), features)
        scale = LOGIT_SCALE if name.startswith("airnet") else 1
        assert torch.allclose(backbone.get_classifier()(features) * scale, logits,
                              atol=1e-5)


@pytest.mark.parametrize("name", ["resnet_tiny_32", "resnet_small_32", "resnet_slim_32", "resnet_medium_32",
                                  "resnet_wide_32", "airnet_small_32", "airnet_medium_32", "airnet_wide_32"])
def test_the_default_score_fits_and_scores_with_every_small_model(name):
    from noisystudent.labels.ood import fit_on_images, score_images

    torch.manual_seed(0)
    model = build_model(name, 3, 1)
    images = torch.randint(0, 256, (18, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    score = fit_on_images(LabelConfig().ood_score, model, images[:12], torch.arange(12) % 3, 8, torch.device("cpu"))
    scores = score_images(model, images[12:], score, 8, torch.device("cpu"))
    assert score.name == "feature_ensemble" and scores.shape == (6,) and np.isfinite(scores).all()


@pytest.mark.parametrize("name", ["resnet_tiny_32", "airnet_small_32"])
def test_the_stem_spread_comes_from_the_same_pass_and_leaves_no_hook(name):
    """feature_ensemble's low-level view: the per-channel standard deviation of the stem's output
    (ResNet's and AirNet's act1), read by a hook during the pass that gives the features and the
    logits; the hook is gone afterwards (a kept one would run on every later forward)."""
    torch.manual_seed(0)
    model = build_model(name, 10, 1).eval()
    images = torch.rand(5, 1, 32, 32)
    backbone = model.backbone
    with torch.no_grad():
        features, logits, stem = model.features_logits_and_stem_spread(images)
        x = model.prepare(images)
        stem_output = backbone.act1(backbone.conv1(x)) if name.startswith("airnet") else \
            backbone.act1(backbone.bn1(backbone.conv1(x)))
        assert torch.allclose(stem, stem_output.std(dim=(2, 3)), atol=1e-5)
        assert stem.shape == (5, backbone.feature_info[0]["num_chs"])
        assert torch.allclose(logits, model(images), atol=1e-6)
        assert torch.allclose(features, model.features(images), atol=1e-6)
    assert not model.stem()._forward_hooks


def test_a_selection_made_before_the_reference_is_still_described():
    """A finished run folder from before resumes: its selection's stats (no separate drop counts,
    no warnings, an energy estimate without interval) still make the console's and report's line."""
    from noisystudent.summary import describe_selection

    old = {"mode": "top_confidence", "pool": 59000, "kept": 58971, "kept_fraction": 0.9995, "selected": 58970,
           "unique": 58178, "images_per_class": 5897, "per_class": [],
           "out_of_domain": {"score": "energy", "quantile": 0.99, "max_energy": -4.95, "dropped": False, "above": 1141,
                             "share_above": 0.0193, "estimated_share": 0.0094}}
    assert describe_selection(old) == ("of 59000: 29 dropped by the filters, 58971 kept; 58970 selected (792 as "
                                       "duplicate copies); est. out of domain 0.9% (energy), 1141 flagged")
