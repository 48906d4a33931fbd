"""Each extension point takes a new implementation as one registered function, as
docs/architecture.md shows: a data source, a target kind, an evaluation suite."""

import numpy as np
import pytest
import torch

from noisystudent.config import LabelConfig, load_config
from noisystudent.data import DATA_SOURCES, ImageSet, memory_pool, register_data_source, split_labeled_unlabeled
from noisystudent.evaluate import SUITES, evaluate_model, register_suite, stratified_sample
from noisystudent.labels import TARGET_KINDS, pseudo_label, register_target_kind, topk_columns
from noisystudent.models import build_model, predict_logits
from noisystudent.pipeline import run
from test_labels import make_pool


@pytest.fixture
def registered():
    """Names a test registers, removed afterwards so that no other test sees them."""
    added = []
    yield added
    for registry, name in added:
        registry.pop(name, None)


def stripes(n: int, seed: int) -> ImageSet:
    """Class c: a bright horizontal stripe at row band c, on noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 60, (n, 1, 32, 32), dtype=torch.uint8, generator=generator)
    for i, c in enumerate(labels.tolist()):
        images[i, :, 4 + 7 * c:8 + 7 * c] = 220
    return ImageSet(images, labels, [f"stripe-{seed}-{i}" for i in range(n)], ["a", "b", "c", "d"])


def test_a_new_data_source_is_one_registered_function(tmp_path, registered):
    @register_data_source("stripes")
    def load_stripes(data_config, seed, test_only):
        test = stripes(40, seed=1)
        if test_only:
            return None, None, test
        labeled, rest = split_labeled_unlabeled(stripes(200, seed=0), data_config.labels_per_class, seed)
        return labeled, memory_pool(rest, "stripes"), test

    registered.append((DATA_SOURCES, "stripes"))
    config = load_config(overrides=[
        "data.dataset=stripes", "data.labels_per_class=10", f"runs_dir={tmp_path}", "rounds=1",
        "models=resnet_tiny_32", "teacher.epochs=20", "teacher.batch_size=20",
        "student.epochs=1", "student.batch_size=8", "selection.confidence_threshold=0", "evaluate.robustness=false"])
    summary = run(config, log=lambda line: None)
    assert summary["teacher_top1"] > 0.5, "four stripes are learnable (chance 0.25)"
    assert summary["rounds"][0]["pseudo_label_accuracy"] is not None, "an in-memory pool keeps its hidden truth"


def test_a_new_target_kind_is_one_registered_function(tmp_path, registered):
    @register_target_kind("sharpened", columns=("topk_ids", "topk_probs"))
    def sharpened(table, k):
        ids, probs = topk_columns(table, k)
        return ids, probs ** 2  # temperature 0.5 on the teacher's distribution

    registered.append((TARGET_KINDS, "sharpened"))
    assert load_config(overrides=["labels.kind=sharpened"]).labels.kind == "sharpened"
    torch.manual_seed(0)
    store = pseudo_label(build_model("resnet_tiny_32", 10, 1), make_pool(12), LabelConfig(shard_size=5),
                         tmp_path / "store", torch.device("cpu"))
    rows = np.array([7, 0, 11])
    soft_ids, soft = store.topk(rows, "soft")
    ids, probs = store.topk(rows, "sharpened")
    expected = soft ** 2 / (soft ** 2).sum(axis=1, keepdims=True)
    assert np.array_equal(ids, soft_ids) and np.allclose(probs, expected, atol=1e-6)
    assert (probs.max(axis=1) > soft.max(axis=1)).all(), "sharper than the teacher's distribution"


def test_a_new_evaluation_suite_is_one_registered_function(registered):
    @register_suite("flip_agreement")
    def flip_agreement(context):
        """How often a prediction survives a horizontal flip of the image."""
        images = context.subset.images
        return {"flip_agreement": (context.predict(images) == context.predict(images.flip(-1))).float().mean().item()}

    registered.append((SUITES, "flip_agreement"))
    config = load_config(overrides=["evaluate.suites=[flip_agreement]", "evaluate.images=8"]).evaluate
    test, model = stripes(16, seed=2), build_model("resnet_tiny_32", 4, 1)
    result = evaluate_model(model, test, torch.device("cpu"), config, cache_root=None)
    subset = test.subset(stratified_sample(test.labels, 8, seed=0))
    logits = predict_logits(model, torch.cat([subset.images, subset.images.flip(-1)]), 16, torch.device("cpu"))
    expected = (logits[:8].argmax(1) == logits[8:].argmax(1)).float().mean().item()
    assert result["flip_agreement"] == expected and result["robustness_images"] == 8
    assert "corruption_errors" not in result, "only the suites named run"

