
import pytest
import torch

from noisystudent.models import build_model
from noisystudent.noise import OPS, RandAugment, op_parameters
from noisystudent.noise.randaugment import apply_op


def images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g)


def test_randaugment_picks_ops_uniformly_and_signs_evenly():
    augment = RandAugment(layers=2, magnitude=10)
    draw = augment.sample(160_000, torch.Generator().manual_seed(0))
    op_index, sign = draw.op_index, draw.sign
    frequency = torch.bincount(op_index.flatten(), minlength=len(OPS)).float() / op_index.numel()
    assert torch.allclose(frequency, torch.full((len(OPS),), 1 / len(OPS)), atol=0.003)
    assert abs((sign == 1).float().mean().item() - 0.5) < 0.005


def test_every_chosen_op_is_applied_each_layer():
    """TF's RandAugment applies the chosen op always (timm's applies it with p=0.5)."""
    x = images(256)
    for op in ("Invert", "Rotate", "Brightness"):
        out = RandAugment(layers=1, magnitude=10, ops=(op,))(x, torch.Generator().manual_seed(1))
        changed = (out != x).flatten(1).any(1).float().mean().item()
        assert changed > 0.99, op


def test_magnitude_is_on_the_tf_scale_and_not_clipped_at_10():
    params = op_parameters(27, 224)
    assert params["Rotate"] == pytest.approx(81.0)
    assert params["ShearX"] == pytest.approx(0.81)
    assert params["Brightness"] == pytest.approx(4.96)
    assert params["TranslateX"] == pytest.approx(270.0)
    assert params["Cutout"] == 108
    assert op_parameters(10, 224)["TranslateX"] == pytest.approx(100.0)
    assert op_parameters(10, 32, "relative")["TranslateX"] == pytest.approx(100 / 224 * 32)


def test_at_475_px_and_m27_every_op_takes_the_official_parameter():
    # tensorflow/tpu models/official/efficientnet/autoaugment.py: distort_image_with_randaugment
    # sets HParams(cutout_const=40, translate_const=100) for every image size; level_to_arg maps
    # level M to (M / _MAX_LEVEL) * const with _MAX_LEVEL = 10; enhance ops (M/10) * 1.8 + 0.1;
    # posterize int(M/10 * 4); solarize int(M/10 * 256); solarize_add int(M/10 * 110).
    official = {"Rotate": 81.0, "ShearX": 0.81, "ShearY": 0.81, "TranslateX": 270.0, "TranslateY": 270.0,
                "Color": 4.96, "Contrast": 4.96, "Brightness": 4.96, "Sharpness": 4.96, "Posterize": 10,
                "Solarize": 691, "SolarizeAdd": 297, "Cutout": 108}
    assert op_parameters(27, 475) == pytest.approx(official)
    assert op_parameters(27, 475, "relative")["TranslateX"] == pytest.approx(270 * 475 / 224), "the small-image mode"


def test_absolute_constants_keep_large_images_in_frame_where_scaled_ones_blank_them():
    # Scaled by S/224, M=27 translates by 1.2 S: a TranslateX/Y draw (2 of 16 ops, twice) leaves
    # a flat gray image, 1 - (14/16)^2 = 23% of a batch. Absolute, 270 px of 475 keeps 43% in view.
    x = torch.randint(0, 256, (192, 1, 475, 475), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def blank_fraction(pixels: str) -> float:
        out = RandAugment(2, 27, pixels=pixels)(x, torch.Generator().manual_seed(1))
        flat = out.flatten(1)
        return (flat == flat[:, :1]).all(1).float().mean().item()

    assert blank_fraction("absolute") == 0.0
    assert blank_fraction("relative") == pytest.approx(1 - (14 / 16) ** 2, abs=0.08)


# ---- each op's own pixel effect ---------------------------------------------------------------
# Inputs hold values in [20, 100] (gray 128 appears only where an op fills), on 32 x 32 images;
# every check fails for the identity, so an op that silently did nothing would be caught.

def dark_images(channels=1, skew=1.0):
    u = torch.rand(16, channels, 32, 32, generator=torch.Generator().manual_seed(0))
    return (20 + 80 * u ** skew).round().to(torch.uint8)


def row_shifts(out: torch.Tensor, x: torch.Tensor) -> list[int | None]:
    """Per row of the first image: the shift d with out[y, c] == x[y, c - d] (gray where c - d is
    outside), or None where the row is no shift of its input row."""
    found = []
    for out_row, row in zip(out[0, 0], x[0, 0]):
        shift = None
        for d in range(-31, 32):
            source = torch.arange(32) - d
            inside = (source >= 0) & (source < 32)
            if torch.equal(out_row[inside], row[source[inside]]) and bool((out_row[~inside] == 128).all()):
                shift = d
                break
        found.append(shift)
    return found


def sheared_rows(out, x, factor):
    """Row y moves by factor * (center - y) pixels, nearest: a shear about the image center."""
    return all(d is not None and abs(d - factor * (15.5 - y)) <= 1 for y, d in enumerate(row_shifts(out, x)))


def high_frequency(images):
    return (images.float()[..., 1:-1, 1:-1] * 4 - images.float()[..., :-2, 1:-1] - images.float()[..., 2:, 1:-1]
            - images.float()[..., 1:-1, :-2] - images.float()[..., 1:-1, 2:]).abs().mean()


def stretched(x):
    """Each image's pixels mapped linearly from [min, max] to [0, 255]."""
    low, high = x.amin((2, 3), True).float(), x.amax((2, 3), True).float()
    return (x.float() - low) * 255 / (high - low)


def cut_square(out, x, centers, half_side):
    """Exactly a gray square of side 2 * half_side - 1 around each center; the rest untouched."""
    ys, xs = torch.arange(32).view(-1, 1), torch.arange(32).view(1, -1)
    for image, before, (cy, cx) in zip(out, x, (centers * 32).long()):
        inside = ((ys - cy).abs() < half_side) & ((xs - cx).abs() < half_side)
        if not (bool((image[:, inside] == 128).all()) and torch.equal(image[:, ~inside], before[:, ~inside])):
            return False
    return True


# op: (input images, parameter, check of (input, output, cutout centers))
OP_EFFECTS = {
    "AutoContrast": (dark_images(), 0, lambda x, out, c: bool((out.float() - stretched(x)).abs().max() <= 1)),
    # a skewed input (80% of its pixels in the darker half of [20, 100]) comes out with half its
    # pixels above the middle (a linear stretch would leave 20% there)
    "Equalize": (dark_images(skew=3.0), 0, lambda x, out, c: abs((out > 127).float().mean().item() - 0.5) < 0.05),
    "Invert": (dark_images(), 0, lambda x, out, c: torch.equal(out, 255 - x)),
    "Rotate": (dark_images(), 90.0, lambda x, out, c: torch.equal(out, torch.rot90(x, 1, (-2, -1)))),
    "Posterize": (dark_images(), 2, lambda x, out, c: torch.equal(out, x & 0b11000000)),
    "Solarize": (dark_images(), 50, lambda x, out, c: torch.equal(out, torch.where(x >= 50, 255 - x, x))),
    # saturation 0: every pixel gray (channels equal), from colored pixels
    "Color": (dark_images(channels=3), 0.0, lambda x, out, c: bool((out == out[:, :1]).all())
              and bool((x != x[:, :1]).any())),
    "Contrast": (dark_images(), 0.5, lambda x, out, c: abs(out.float().std() / x.float().std() - 0.5) < 0.03
                 and abs(out.float().mean() - x.float().mean()) < 1),
    "Brightness": (dark_images(), 2.0, lambda x, out, c: (out.float() - 2 * x.float()).abs().max() <= 1),
    # sharper: more high-frequency energy inside, the one-pixel border kept (PIL's and TF's rule)
    "Sharpness": (dark_images(), 2.0, lambda x, out, c: high_frequency(out) > 1.5 * high_frequency(x)
                  and torch.equal(out[..., 0, :], x[..., 0, :]) and torch.equal(out[..., :, 0], x[..., :, 0])),
    "ShearX": (dark_images(), 0.3, lambda x, out, c: sheared_rows(out, x, 0.3)),
    "ShearY": (dark_images(), 0.3, lambda x, out, c: sheared_rows(out.transpose(-1, -2), x.transpose(-1, -2), 0.3)),
    "TranslateX": (dark_images(), 5.0, lambda x, out, c: torch.equal(out[..., 5:], x[..., :-5])
                   and bool((out[..., :5] == 128).all())),
    "TranslateY": (dark_images(), 5.0, lambda x, out, c: torch.equal(out[..., 5:, :], x[..., :-5, :])
                   and bool((out[..., :5, :] == 128).all())),
    "Cutout": (dark_images(), 4, lambda x, out, c: cut_square(out, x, c, 4)),
    # only pixels under 128 get brighter (full-range input here)
    "SolarizeAdd": (dark_images() * 2, 60, lambda x, out, c: torch.equal(
        out, torch.where(x < 128, (x.int() + 60).clamp(max=255).to(torch.uint8), x))),
}


@pytest.mark.parametrize("op", OPS)
def test_each_op_changes_the_pixels_its_own_way(op):
    x, value, check = OP_EFFECTS[op]
    centers = torch.rand(len(x), 2, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    out = apply_op(op, x, value, centers)
    assert out.shape == x.shape and out.dtype == torch.uint8 and not torch.equal(out, x), op
    assert check(x, out, centers), op


def test_randaugment_is_seeded():
    x = images()
    a = RandAugment(2, 10)(x, torch.Generator().manual_seed(3))
    b = RandAugment(2, 10)(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_student_model_noise_active_in_train_and_off_in_eval():
    model = build_model("resnet_tiny_32", 10, 1, dropout=0.5, survival_prob=0.8)
    x = torch.rand(32, 1, 32, 32)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert not torch.allclose(a, b), "dropout / stochastic depth must make train-mode outputs random"
    model.eval()
    torch.manual_seed(0)
    c = model(x)
    torch.manual_seed(1)
    assert torch.equal(c, model(x)), "no noise in eval mode"


def test_noise_switches_turn_model_noise_off():
    model = build_model("resnet_tiny_32", 10, 1, dropout=0.0, survival_prob=1.0)
    model.train()
    x = torch.rand(32, 1, 32, 32)
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert torch.equal(a, model(x))
    assert model.backbone.drop_rate == 0
    assert all(getattr(m, "drop_path", None) is None for m in model.backbone.modules() if hasattr(m, "drop_path"))


def test_dropout_before_the_classifier_drops_at_the_requested_rate():
    """timm-style statistical test: seeded, large batch, observed rate within tolerance."""
    for rate in (0.2, 0.5):
        model = build_model("resnet_tiny_32", 10, 1, dropout=rate).train()
        seen = []
        model.backbone.fc.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
        torch.manual_seed(0)
        model.backbone.forward_head(torch.ones(20_000, model.backbone.num_features, 2, 2))
        observed = (seen[0] == 0).float().mean().item()
        assert abs(observed - rate) < 0.01, (rate, observed)
