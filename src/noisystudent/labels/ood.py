"""Out-of-domain scores, their AUROC, and an estimate of a pool's out-of-domain share.

Every score is "higher = more out of domain", computed from the teacher's logits and, for the
feature-space ones, its penultimate features:

  energy       -logsumexp(logits) (Liu et al. 2020)
  max_softmax  -max softmax probability (Hendrycks & Gimpel 2017: the paper's confidence, negated)
  max_logit    -max logit (Hendrycks et al. 2022)
  mahalanobis  min over classes of the Mahalanobis distance of the features to the class mean,
               one shared covariance (Lee et al. 2018), fit on the teacher's labeled images
  relative_mahalanobis  mahalanobis minus the distance to one Gaussian over all classes (Ren et
               al. 2021, "A simple fix to Mahalanobis distance"): what is far from every class
               *and* atypical overall, not what is merely far from the common directions
  knn          distance of the L2-normalized features to their KNN_K-th nearest labeled image's
               (Sun et al. 2022)
  feature_ensemble  relative_mahalanobis on the penultimate features plus relative_mahalanobis on
               the per-channel standard deviation of the stem's output (models/registry.py,
               features_logits_and_stem_spread), each standardized by its mean and standard
               deviation on the reference: Lee et al. 2018's ensemble over depths, with the two
               depths that measured best. The stem sees low-level statistics (thin strokes on a
               black ground vs filled garments) that the penultimate features discard; the middle
               stages separated worse than either and summing all five stages ranked below the
               penultimate alone (docs/ood.md). Lee et al. weight the depths by a regression on
               out-of-domain examples; with none, each depth's score counts in units of its own
               spread over in-domain images the teacher has not seen.

The feature-space scores are fit on the images the teacher trained on (a bank, or class means
and a covariance). What a score *means* is read off a reference: labeled images no model
trained on (`data.reference_fraction`, data/split.py), scored like the pool. A teacher scores
its own training images as more in domain than new in-domain images (14.8% of an in-domain pool
scored above its training images' 0.99 quantile), so a reference made of them makes every
threshold and estimate wrong; held-out images are new to the teacher, like the pool's.

Which score is the default (`labels.ood_score`) is measured in benchmarks/ood_filter.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from ..models import inference, to_model_input

OOD_SCORES = ("energy", "max_softmax", "max_logit", "mahalanobis", "relative_mahalanobis", "knn", "feature_ensemble")
FEATURE_SCORES = ("mahalanobis", "relative_mahalanobis", "knn", "feature_ensemble")
STEM_SCORES = ("feature_ensemble",)  # also read the stem's spread
KNN_K = 5  # Sun et al. take k = 50 of 50,000 training images; a few of ~1,000 labeled ones keeps the
#            k-th neighbour of a new in-domain image as near as on their scale
SHRINKAGE = 0.1  # weight of the scaled identity in the shared covariance: 1,000 labeled images
#                  cannot estimate a 256-dimensional covariance alone (it is near singular)
ESTIMATE_QUANTILE = 0.8  # the estimator's cut (estimate_share): where few out-of-domain images score
Z95 = 1.959964  # two-sided 95% normal quantile


@dataclass
class OodScore:
    """A fitted out-of-domain score: call it on (features, logits) of a batch."""

    name: str
    means: torch.Tensor | None = None  # mahalanobis: [C, D] class means (relative: and last, all classes')
    precision: torch.Tensor | None = None  # mahalanobis: [D, D] inverse of the shrunk shared covariance
    background: torch.Tensor | None = None  # relative_mahalanobis: [D, D] the same, all classes as one
    bank: torch.Tensor | None = None  # knn: [N, D] normalized features of the labeled images
    parts: tuple["OodScore", ...] = ()  # feature_ensemble: relative_mahalanobis on the features, on the stem's spread
    standardize: torch.Tensor | None = None  # feature_ensemble: [2, 2] each part's (mean, std) on the reference

    @property
    def needs_features(self) -> bool:
        return self.name in FEATURE_SCORES

    @property
    def needs_stem(self) -> bool:
        return self.name in STEM_SCORES

    def __call__(self, features: torch.Tensor | None, logits: torch.Tensor,
                 stem: torch.Tensor | None = None) -> torch.Tensor:
        # in fp32 also inside a bf16 autocast (labeling): bf16's 8 bits of mantissa would round
        # distances of hundreds to steps of about one
        with torch.autocast(logits.device.type, enabled=False):
            return self._score(features, logits, stem)

    def _score(self, features: torch.Tensor | None, logits: torch.Tensor, stem: torch.Tensor | None) -> torch.Tensor:
        logits = logits.float()
        if self.name == "feature_ensemble":
            penultimate, spread = (part._score(view, logits, None) for part, view in zip(self.parts, (features, stem)))
            (mean_a, std_a), (mean_b, std_b) = self.standardize.tolist()
            return (penultimate - mean_a) / std_a + (spread - mean_b) / std_b
        if self.name == "energy":
            return -torch.logsumexp(logits, dim=1)
        if self.name == "max_softmax":
            return -logits.softmax(dim=1).amax(dim=1)
        if self.name == "max_logit":
            return -logits.amax(dim=1)
        features = features.float()
        if self.name == "mahalanobis":
            return _distances(features, self.means, self.precision).amin(dim=1)
        if self.name == "relative_mahalanobis":
            return (_distances(features, self.means[:-1], self.precision).amin(dim=1)
                    - _distances(features, self.means[-1:], self.background)[:, 0])
        distances = torch.cdist(torch.nn.functional.normalize(features, dim=1), self.bank)
        return distances.topk(min(KNN_K, len(self.bank)), dim=1, largest=False).values[:, -1]


def fit_ood_score(name: str, features: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                  stem: torch.Tensor | None = None,
                  reference: tuple[torch.Tensor, torch.Tensor] | None = None) -> OodScore:
    """The score `name`, fit (for the feature-space ones) on the teacher's features of its labeled
    images and their labels; feature_ensemble also on their `stem` spreads, and standardized on
    `reference`, the (features, stem spreads) of the held-out reference. Without a reference
    (data.reference_fraction 0: no filter and no estimate read the score) it is standardized on
    the labeled images, which the teacher trained on: their penultimate distances are too small,
    so that part then weighs more."""
    if name not in OOD_SCORES:
        raise UserError(f"out-of-domain score {name!r} is not one of {', '.join(OOD_SCORES)}")
    if name not in FEATURE_SCORES:
        return OodScore(name)
    if name == "feature_ensemble":
        parts = (fit_ood_score("relative_mahalanobis", features, labels),
                 fit_ood_score("relative_mahalanobis", stem, labels))
        views = (features, stem) if reference is None else reference
        part_scores = [part(view, view[:, :1]) for part, view in zip(parts, views)]
        standardize = torch.tensor([[float(v.double().mean()), float(v.double().std().clamp_min(1e-12))]
                                    for v in part_scores])
        return OodScore(name, parts=parts, standardize=standardize)
    features = features.double()
    if name == "knn":
        return OodScore(name, bank=torch.nn.functional.normalize(features, dim=1).float())
    classes = int(labels.max()) + 1
    means = torch.stack([features[labels == c].mean(dim=0) for c in range(classes)])
    precision = _shrunk_precision(features - means[labels])
    if name == "mahalanobis":
        return OodScore(name, means=means.float(), precision=precision)
    overall = features.mean(dim=0, keepdim=True)
    return OodScore(name, means=torch.cat([means, overall]).float(), precision=precision,
                    background=_shrunk_precision(features - overall))


def _shrunk_precision(centered: torch.Tensor) -> torch.Tensor:
    """The inverse of the covariance of `centered` (float64 rows), shrunk toward its mean variance."""
    covariance = centered.T @ centered / len(centered)
    scale = covariance.diagonal().mean()
    shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * scale * torch.eye(len(covariance), dtype=covariance.dtype)
    return torch.linalg.inv(shrunk).float()


def _distances(features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """[N, M] squared Mahalanobis distances of each row to each mean."""
    centered = features[:, None, :] - means[None]
    return torch.einsum("ncd,de,nce->nc", centered, precision, centered)


def model_views(model: torch.nn.Module, inputs: torch.Tensor,
                stem: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(penultimate features, logits, the stem's spread if `stem` else None) of one batch of model
    inputs, from one pass, as they come (on the device, maybe bf16): what an OodScore reads."""
    if stem:
        return model.features_logits_and_stem_spread(inputs)
    return (*model.features_and_logits(inputs), None)


def predict_features(model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device,
                     stem: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(penultimate features, logits, the stem's spread or None), float32 on the CPU, of uint8
    images, un-noised (eval mode): the view the label stage scores the pool with."""
    views = []
    with inference(model, device):
        for start in range(0, len(images), batch_size):
            views.append([None if view is None else view.float().cpu() for view in model_views(
                model, to_model_input(images[start:start + batch_size], device), stem)])
    return tuple(None if column[0] is None else torch.cat(column) for column in zip(*views))


def fit_on_images(name: str, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                  device: torch.device, reference: torch.Tensor | None = None) -> OodScore:
    """The score `name` fit on the teacher's view of its labeled images (features are computed only
    for the feature-space scores); feature_ensemble standardized on the `reference` images' view."""
    if name not in FEATURE_SCORES:
        return fit_ood_score(name)
    stem = name in STEM_SCORES
    features, _, spread = predict_features(model, images, batch_size, device, stem)
    reference_view = None if reference is None or not stem else \
        predict_features(model, reference, batch_size, device, stem)[::2]
    return fit_ood_score(name, features, labels, spread, reference_view)


def score_images(model: torch.nn.Module, images: torch.Tensor, score: OodScore, batch_size: int,
                 device: torch.device) -> np.ndarray:
    """float32 scores of uint8 images (the reference's, in the label stage)."""
    return score(*predict_features(model, images, batch_size, device, score.needs_stem)).numpy().astype(np.float32)


def auroc(in_domain: np.ndarray, out_of_domain: np.ndarray) -> float:
    """P(an out-of-domain image scores above an in-domain one), ties counting half: the
    Mann-Whitney statistic. 0.5 is a random score, 1 a perfect one."""
    scores = np.concatenate([in_domain, out_of_domain]).astype(np.float64)
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    sorted_scores = scores[order]  # average the ranks of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    n_in, n_out = len(in_domain), len(out_of_domain)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


def estimate_share(share_below: float, pool_size: float, reference: np.ndarray, cut: float) -> dict:
    """The out-of-domain share of a pool with a 95% interval, from the share of it scoring at or
    below `cut`.

    In-domain pool images score like the reference (new in-domain images), so a share F of them
    is at or below the cut, F read off the reference; out-of-domain images score higher and
    rarely fall below it. So share_below = (1 - p) F, and p = 1 - share_below / F. Taking the cut
    inside the in-domain bulk (the reference's ESTIMATE_QUANTILE) rather than in its tail needs
    only that out-of-domain images rarely score like typical in-domain ones, not like every one
    of them: the tail count the previous estimate used missed the 49% of out-of-domain images
    that scored below the 0.99 quantile. Those that still score below the cut bias p low by
    their share times p / F.

    The interval propagates both binomial errors (the pool's count, and F from the reference's
    size) by the delta method. `pool_size` is an effective count (copies weigh in as
    (sum w)^2 / sum w^2)."""
    reference_below = float((reference <= cut).mean())
    if reference_below == 0 or pool_size == 0:
        return {"estimated_share": None, "interval": None}
    ratio = share_below / reference_below
    relative_variance = ((1 - share_below) / max(share_below, 1 / pool_size) / pool_size
                         + (1 - reference_below) / reference_below / len(reference))
    half = Z95 * ratio * math.sqrt(relative_variance)
    clip = lambda value: min(1.0, max(0.0, value))  # noqa: E731
    return {"estimated_share": clip(1 - ratio), "interval": [clip(1 - ratio - half), clip(1 - ratio + half)]}
