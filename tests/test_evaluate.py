import pytest
import torch

from noisystudent.evaluate.adversarial import adversarial_accuracy, fgsm, pgd
from noisystudent.evaluate.calibration import confusion_matrix, expected_calibration_error, per_class_accuracy
from noisystudent.evaluate.corruptions import (
    ALEXNET_ERRORS, CORRUPTIONS, CorruptionCache, corrupt_images, corruption_errors, mean_corruption_error,
    relative_mean_corruption_error,
)
from noisystudent.evaluate.perturbations import (
    PERTURBATIONS, flip_probability, mean_flip_rate, perturbation_flip_probabilities,
)
from noisystudent.evaluate import stratified_sample
from noisystudent.models import build_model

# ResNet-50's ImageNet-C corruption errors (CE, % of AlexNet's) and its mCE, as published in
# Hendrycks & Dietterich 2019, Table 2 (rounded to integers there, hence the tolerance).
RESNET50_CE = {"gaussian_noise": 80, "shot_noise": 82, "impulse_noise": 83, "defocus_blur": 75, "glass_blur": 89,
               "motion_blur": 78, "zoom_blur": 80, "snow": 78, "frost": 75, "fog": 66, "brightness": 57,
               "contrast": 71, "elastic_transform": 85, "pixelate": 77, "jpeg_compression": 77}
RESNET50_MCE = 76.7


def images(n=16, size=32, channels=1, seed=0):
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_mce_of_published_errors_is_the_published_mce():
    # per-corruption mean errors of ResNet-50 recovered from its published CE and AlexNet's errors
    resnet_errors = {name: [ce / 100 * ALEXNET_ERRORS[name]] * 5 for name, ce in RESNET50_CE.items()}
    result = mean_corruption_error(resnet_errors, ALEXNET_ERRORS)
    assert result["mce"] == pytest.approx(RESNET50_MCE, abs=0.3)
    assert result["ce"]["glass_blur"] == pytest.approx(89)


def test_mce_sums_over_severities_before_dividing():
    model = {"fog": [0.1, 0.2, 0.3, 0.4, 0.5]}
    baseline = {"fog": [0.5, 0.5, 0.5, 0.5, 1.0]}
    assert mean_corruption_error(model, baseline)["ce"]["fog"] == pytest.approx(100 * 1.5 / 3.0)
    relative = relative_mean_corruption_error(model, 0.1, baseline, 0.4)
    assert relative["relative_ce"]["fog"] == pytest.approx(100 * (1.5 - 0.5) / (3.0 - 2.0))
    assert mean_corruption_error(model, model)["mce"] == pytest.approx(100)


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "glass_blur", "frost", "jpeg_compression"])
def test_corruptions_work_on_grayscale_and_rgb_32px_and_are_seeded(name):
    for channels in (1, 3):
        x = images(4, channels=channels)
        a = corrupt_images(x, name, 3, seed=1)
        assert a.shape == x.shape and a.dtype == torch.uint8
        assert not torch.equal(a, x)
        assert torch.equal(a, corrupt_images(x, name, 3, seed=1))


def test_too_small_images_are_reported_not_skipped():
    results = corruption_errors(lambda batch: 0.0, CorruptionCache("/nonexistent", images(2, size=28), 0), ["fog"], [1])
    assert "32x32" in results["fog"]["unavailable"]
    assert mean_corruption_error(results, {"fog": [0.5]})["mce"] is None


def test_corrupted_sets_are_cached_and_reused(tmp_path):
    x = images(3)
    cache = CorruptionCache(tmp_path, x, seed=0)
    first = cache.get("contrast", 2)
    path = cache.folder / "contrast-2.npy"
    mtime = path.stat().st_mtime_ns
    assert torch.equal(CorruptionCache(tmp_path, x.clone(), seed=0).get("contrast", 2), first)
    assert path.stat().st_mtime_ns == mtime, "the second model reads the same corrupted images"
    assert CorruptionCache(tmp_path, images(3, seed=9), seed=0).folder != cache.folder
    assert len(CORRUPTIONS) == 15


def test_ece_zero_when_calibrated_and_large_when_overconfident():
    labels = torch.tensor([0, 1, 0, 1])
    calibrated = torch.tensor([[0.5, 0.5]] * 4)
    assert expected_calibration_error(calibrated, labels) == pytest.approx(0.0, abs=1e-6)
    wrong = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert expected_calibration_error(wrong, labels) == pytest.approx(1.0)


def test_confusion_and_per_class_accuracy():
    confusion = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 4)
    assert confusion.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert per_class_accuracy(confusion) == [1.0, 1.0, 0.5, None]


def test_flip_probability_compares_with_first_frame_for_noise_and_previous_otherwise():
    predictions = torch.tensor([[0], [1], [1], [0]])  # frames x images
    assert flip_probability(predictions, compare_to_first=False) == pytest.approx(2 / 3)
    assert flip_probability(predictions, compare_to_first=True) == pytest.approx(2 / 3)
    steady_change = torch.tensor([[0], [1], [1], [1]])
    assert flip_probability(steady_change, compare_to_first=False) == pytest.approx(1 / 3)
    assert flip_probability(steady_change, compare_to_first=True) == pytest.approx(1.0)
    assert mean_flip_rate({"rotate": 0.1, "translate": 0.3}, {"rotate": 0.2, "translate": 0.3})["mfr"] == pytest.approx(75)


def test_every_perturbation_changes_the_frames_and_a_constant_model_never_flips():
    fp = perturbation_flip_probabilities(lambda x: torch.zeros(len(x), dtype=torch.long), images(4), 3, seed=0)
    assert set(fp) == set(PERTURBATIONS) and all(value == 0 for value in fp.values())

    def pixel_hash(x):
        """A 'model' whose answer changes with any pixel: a frame equal to the previous one never flips."""
        return (x * 255).round().long().flatten(1).mul(torch.arange(x[0].numel()) % 7919).sum(1) % 1_000_003

    fp = perturbation_flip_probabilities(pixel_hash, images(8), 3, seed=0)
    assert all(value == 1 for value in fp.values()), fp


@pytest.fixture(scope="module")
def attacked():
    torch.manual_seed(0)
    model = build_model("resnet_tiny_32", 10, 1).eval()
    x = images(32)
    with torch.no_grad():
        y = model(x.float() / 255).argmax(1)  # the model's own answers: clean accuracy is exactly 1
    return model, x, y


def test_attacks_stay_in_the_eps_ball_and_the_pixel_range(attacked):
    model, x, y = attacked
    clean = x.float() / 255
    for adversarial in (fgsm(model, clean, y, 0.03), pgd(model, clean, y, 0.03, 5, 0.01, True, torch.Generator().manual_seed(0))):
        assert (adversarial - clean).abs().max() <= 0.03 + 1e-6
        assert adversarial.min() >= 0 and adversarial.max() <= 1


def test_zero_epsilon_is_clean_accuracy_and_attacks_lower_it(attacked):
    model, x, y = attacked
    accuracy = adversarial_accuracy(model, x, y, torch.device("cpu"), [0.0, 0.01, 0.05], attack="fgsm")
    assert accuracy["0"] == 1.0
    assert accuracy["0.05"] < 1.0


def test_pgd_one_full_step_is_fgsm_and_more_steps_never_help(attacked):
    model, x, y = attacked
    clean = x.float() / 255
    assert torch.equal(pgd(model, clean, y, 0.02, 1, 0.02, False), fgsm(model, clean, y, 0.02))
    correct = []
    for steps in (1, 3, 6):
        adversarial = pgd(model, clean, y, 0.02, steps, 0.005, False)
        with torch.no_grad():
            correct.append((model(adversarial).argmax(1) == y).sum().item())
    assert correct == sorted(correct, reverse=True), correct


def test_robustness_subset_is_a_stratified_seeded_sample_of_a_class_by_class_test_set():
    # a folder test set is listed class by class: its first images would be a few classes only
    labels = torch.repeat_interleave(torch.arange(10), torch.tensor([200] * 5 + [100] * 5))
    chosen = stratified_sample(labels, 300, seed=0)
    assert len(chosen) == len(set(chosen)) == 300 and chosen == sorted(chosen)
    histogram = torch.bincount(labels[chosen], minlength=10)
    assert histogram.tolist() == [40] * 5 + [20] * 5, "each class's share of the test set"
    assert chosen == stratified_sample(labels, 300, seed=0) != stratified_sample(labels, 300, seed=1)
    assert stratified_sample(labels, 5000, seed=0) == list(range(1500)), "fewer images than asked: all of them"
    odd = stratified_sample(torch.tensor([0] * 7 + [1] * 2 + [2]), 5, seed=0)
    assert len(odd) == 5 and torch.bincount(torch.tensor([0] * 7 + [1] * 2 + [2])[odd]).tolist() == [4, 1]


def test_alexnet_normalized_mce_is_reported_when_asked(tmp_path):
    from noisystudent.config import EvaluateConfig
    from noisystudent.data import ImageSet
    from noisystudent.evaluate import evaluate_model

    torch.manual_seed(0)
    test = ImageSet(images(24), torch.arange(24) % 3, [str(i) for i in range(24)], ["a", "b", "c"])
    config = EvaluateConfig(images=12, corruptions=["gaussian_noise", "contrast"], severities=[1, 3],
                            perturbation_frames=2, pgd_steps=1, alexnet_mce=True)
    result = evaluate_model(build_model("resnet_tiny_32", 3, 1), test, torch.device("cpu"), config, tmp_path)
    for name in ("gaussian_noise", "contrast"):  # CE_c = 100 * mean error over severities / AlexNet's
        expected = 100 * sum(result["corruption_errors"][name]) / 2 / ALEXNET_ERRORS[name]
        assert result["alexnet_ce"][name] == pytest.approx(expected)
    assert result["alexnet_mce"] == pytest.approx(sum(result["alexnet_ce"].values()) / 2)
    config.alexnet_mce = False
    assert "alexnet_mce" not in evaluate_model(build_model("resnet_tiny_32", 3, 1), test, torch.device("cpu"), config,
                                               tmp_path)


def test_restricting_the_logits_to_the_test_sets_classes_scores_a_subset_test_set(tmp_path):
    from noisystudent.config import EvaluateConfig
    from noisystudent.data import ImageSet
    from noisystudent.evaluate import evaluate_model

    class Fixed(torch.nn.Module):
        """Logits 3, 2, 1, 0 for classes 0..3, whatever the image: class 0 always wins."""

        def forward(self, x):
            return torch.tensor([3.0, 2.0, 1.0, 0.0]).expand(len(x), 4)

    labels = torch.tensor([1, 1, 1, 2])  # an ImageNet-A-like test set: classes 0 and 3 absent
    test = ImageSet(images(4), labels, [str(i) for i in range(4)], ["a", "b", "c", "d"])
    everything = evaluate_model(Fixed(), test, torch.device("cpu"), EvaluateConfig(robustness=False), tmp_path)
    subset = evaluate_model(Fixed(), test, torch.device("cpu"),
                            EvaluateConfig(robustness=False, restrict_to_test_classes=True), tmp_path)
    assert everything["top1"] == 0.0 and everything["classes_scored"] == 4
    assert subset["top1"] == 0.75 and subset["classes_scored"] == 2, "class 1 wins among the test set's {1, 2}"
