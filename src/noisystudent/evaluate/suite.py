"""Everything `evaluate` measures about one model, as one JSON-able dict (eval.json).

Clean accuracy (top-1, top-5, per class, confusion matrix, ECE over 15 bins) on the whole test
set; the robustness suites `evaluate.suites` names (registered below with `register_suite`:
corruptions, perturbations, adversarial) on `evaluate.images` of its
images, a seeded sample stratified by class (a folder test set is listed class by class, so its
first images would be a few classes only). Ratios to a baseline (mCE, relative mCE, mFR) are added by
`compare_to_baseline`, because the baseline (the round-0 teacher by default) is itself a model
evaluated the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import EvaluateConfig
from ..data import ImageSet
from ..models import check_model_fits, load_exported, predict_logits
from ..registries import SUITES
from .accuracy import topk_accuracy
from .adversarial import adversarial_accuracy
from .calibration import confusion_matrix, expected_calibration_error, per_class_accuracy
from .corruptions import (ALEXNET_ERRORS, CorruptionCache, corruption_errors, mean_corruption_error,
                          relative_mean_corruption_error)
from .perturbations import mean_flip_rate, perturbation_flip_probabilities


def evaluate_model(model: torch.nn.Module, test: ImageSet, device: torch.device, config: EvaluateConfig,
                   cache_root: Path, seed: int = 0, batch_size: int = 1024) -> dict:
    # ImageNet-A / -R protocol: their 200 classes are a subset of the model's 1000, and a model is
    # scored with its logits restricted to the classes the test set has
    absent = (torch.bincount(test.labels, minlength=test.num_classes) == 0 if config.restrict_to_test_classes
              else torch.zeros(test.num_classes, dtype=torch.bool))

    def restricted(logits: torch.Tensor) -> torch.Tensor:
        return logits.masked_fill(absent, float("-inf")) if absent.any() else logits

    logits = restricted(predict_logits(model, test.images, batch_size, device, desc="evaluate"))
    probs = logits.softmax(dim=1)
    confusion = confusion_matrix(logits.argmax(1), test.labels, test.num_classes)
    result = {
        "top1": topk_accuracy(logits, test.labels, 1), "top5": topk_accuracy(logits, test.labels, 5),
        "n": len(test), "ece": expected_calibration_error(probs, test.labels, bins=15),
        "per_class_accuracy": dict(zip(test.classes, per_class_accuracy(confusion))),
        "confusion_matrix": confusion.tolist(), "classes_scored": int((~absent).sum()),
    }
    if not config.robustness:
        return result
    subset = test.subset(stratified_sample(test.labels, config.images, seed))

    def predict(images: torch.Tensor) -> torch.Tensor:
        return restricted(predict_logits(model, images, batch_size, device, desc="robustness")).argmax(1)

    def error_of(images: torch.Tensor) -> float:
        return (predict(images) != subset.labels).float().mean().item()

    result["robustness_images"] = len(subset)
    result["robustness_ids"] = subset.ids
    result["clean_error_subset"] = error_of(subset.images)
    context = SuiteContext(model, subset, device, config, seed, cache_root, predict, error_of)
    for name in config.suites:
        result.update(SUITES[name](context))
    return result


# ---------------------------------------------------------------------------------------------
# Robustness suites: `evaluate.suites` names them; each returns the keys it adds to eval.json.

@dataclass
class SuiteContext:
    model: torch.nn.Module
    subset: ImageSet  # the stratified robustness subset
    device: torch.device
    config: EvaluateConfig
    seed: int
    cache_root: Path
    predict: Callable[[torch.Tensor], torch.Tensor]  # uint8 images -> predicted classes
    error_of: Callable[[torch.Tensor], float]  # uint8 images of the subset -> top-1 error


Suite = Callable[[SuiteContext], dict]


def register_suite(name: str) -> Callable[[Suite], Suite]:
    def register(suite: Suite) -> Suite:
        SUITES[name] = suite
        return suite
    return register


@register_suite("corruptions")
def corruptions_suite(context: SuiteContext) -> dict:
    """ImageNet-C: top-1 error per corruption and severity (mCE is taken against a baseline)."""
    config = context.config
    cache = CorruptionCache(context.cache_root, context.subset.images, context.seed)
    result = {"corruption_errors": corruption_errors(context.error_of, cache, config.corruptions, config.severities)}
    if config.alexnet_mce:  # the ImageNet-C paper's normalization (Hendrycks & Dietterich 2019)
        alexnet = mean_corruption_error(result["corruption_errors"], ALEXNET_ERRORS)
        result["alexnet_ce"], result["alexnet_mce"] = alexnet["ce"], alexnet["mce"]
    return result


@register_suite("perturbations")
def perturbations_suite(context: SuiteContext) -> dict:
    """ImageNet-P style: flip probability per perturbation sequence (mFR against a baseline)."""
    return {"flip_probability": perturbation_flip_probabilities(context.predict, context.subset.images,
                                                                context.config.perturbation_frames, context.seed)}


@register_suite("adversarial")
def adversarial_suite(context: SuiteContext) -> dict:
    """FGSM and PGD accuracy per L-inf epsilon, in pixel space."""
    config, subset = context.config, context.subset
    attack = dict(device=context.device, epsilons=config.epsilons, seed=context.seed)
    return {"fgsm": adversarial_accuracy(context.model, subset.images, subset.labels, attack="fgsm", **attack),
            "pgd": adversarial_accuracy(context.model, subset.images, subset.labels, attack="pgd",
                                        steps=config.pgd_steps, random_start=config.pgd_random_start, **attack)}


def evaluate_weights(path: Path, test: ImageSet, device: torch.device, config: EvaluateConfig, cache_root: Path,
                     seed: int = 0, baseline: dict | None = None) -> dict:
    """Evaluate exported weights (a stage folder or its final.safetensors), against `baseline`'s
    eval dict when given. The pipeline and `noisystudent evaluate` both come through here, from
    the file, so the same weights give the same numbers bit for bit."""
    model = load_exported(path)
    # its accuracy on other classes would be a number about nothing (and an mCE against it, 100)
    check_model_fits(model.spec, test.classes, test.channels, path, "the test set",
                     "evaluate it with the config of the data it was trained on (--config)")
    result = {"model": model.spec.name, "parameters": sum(p.numel() for p in model.parameters()),
              "resolution": model.spec.resolution,
              **evaluate_model(model.to(device), test, device, config, cache_root, seed)}
    return result if baseline is None else compare_to_baseline(result, baseline)


def stratified_sample(labels: torch.Tensor, count: int, seed: int) -> list[int]:
    """`count` indices (all when there are fewer), each class's share as in `labels` (largest
    remainders), drawn at random per class with `seed`; returned in their original order."""
    if count >= len(labels):
        return list(range(len(labels)))
    classes, sizes = torch.unique(labels, return_counts=True)
    exact = sizes.double() * count / len(labels)
    quota = exact.floor().long()
    short = count - int(quota.sum())
    quota[torch.argsort(exact - quota, descending=True, stable=True)[:short]] += 1
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls, take in zip(classes.tolist(), quota.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:take]])
    return torch.cat(chosen).sort().values.tolist()


def compare_to_baseline(result: dict, baseline: dict) -> dict:
    """Add CE / mCE, relative mCE and FR / mFR against a baseline model's eval dict."""
    if "corruption_errors" in result and "corruption_errors" in baseline:
        result.update(mean_corruption_error(result["corruption_errors"], baseline["corruption_errors"]))
        result.update(relative_mean_corruption_error(result["corruption_errors"], result["clean_error_subset"],
                                                     baseline["corruption_errors"], baseline["clean_error_subset"]))
    if "flip_probability" in result and "flip_probability" in baseline:
        result.update(mean_flip_rate(result["flip_probability"], baseline["flip_probability"]))
    return result
