import logging

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import DropPath
from torch import nn

from noisystudent.errors import UserError
from noisystudent.models import (
    EFFICIENTNETS, MODELS, build_model, check_student_size, count_parameters, export_weights, load_exported,
)
from noisystudent.models.registry import OWN_PREFIX
from noisystudent.noise import set_linear_stochastic_depth, stochastic_depth_blocks, stochastic_depth_rates

REGISTERED_WITH_TIMM = [name for name, entry in MODELS.items() if entry.timm_name.startswith(OWN_PREFIX)]

# Published parameter counts at 1000 classes: EfficientNet paper (B0 5.3M, B7 66M), Noisy Student
# appendix (L0 140M, L1 270M, L2 480M).
PUBLISHED_MILLIONS = {"efficientnet-b0": 5.3, "efficientnet-b7": 66, "efficientnet-l0": 140,
                      "efficientnet-l1": 270, "efficientnet-l2": 480}


@pytest.mark.parametrize("name, millions", PUBLISHED_MILLIONS.items())
def test_parameter_counts_match_the_published_ones(name, millions):
    params = count_parameters(name, 1000, 3) / 1e6  # on the meta device: nothing allocated
    assert params == pytest.approx(millions, rel=0.02), (name, params)


def test_efficientnets_grow_along_the_family():
    counts = [count_parameters(name, 1000, 3) for name in EFFICIENTNETS]
    assert counts == sorted(counts)


def test_per_model_default_dropout_follows_the_official_code():
    assert MODELS["efficientnet-b0"].dropout == 0.2 and MODELS["efficientnet-b4"].dropout == 0.4
    assert MODELS["efficientnet-b7"].dropout == 0.5 and MODELS["efficientnet-l2"].dropout == 0.5
    with torch.device("meta"):
        assert build_model("efficientnet-b3", 1000, 3, dropout=None).backbone.drop_rate == 0.3
        assert build_model("efficientnet-b3", 1000, 3, dropout=0.5).backbone.drop_rate == 0.5


def test_efficientnets_use_the_official_batchnorm_momentum_and_eps():
    # tensorflow/tpu models/official/efficientnet/efficientnet_builder.py: batch_norm_momentum=0.99,
    # batch_norm_epsilon=1e-3; TF's momentum weighs the running average, so 0.99 there is 0.01 here.
    for name in EFFICIENTNETS:
        with torch.device("meta"):
            backbone = build_model(name, 1000, 3).backbone
        norms = {(m.momentum, m.eps) for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)}
        assert norms == {(0.01, 1e-3)}, (name, norms)


def test_b0_to_b7_and_l2_are_timms_tf_efficientnets():
    variants = ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "l2"]
    assert [MODELS[f"efficientnet-{v}"].timm_name for v in variants] == [f"tf_efficientnet_{v}" for v in variants]
    assert all(timm.is_model(entry.timm_name) for entry in MODELS.values())


@pytest.mark.parametrize("name", REGISTERED_WITH_TIMM)
def test_timm_create_model_builds_our_registered_models_as_build_model_does(name):
    with torch.device("meta"):
        ours = build_model(name, 10, 1, dropout=0.3, survival_prob=0.8).backbone
        timms = timm.create_model(MODELS[name].timm_name, num_classes=10, in_chans=1, drop_rate=0.3,
                                  drop_path_rate=0.2)
    shapes = lambda model: {key: value.shape for key, value in model.state_dict().items()}  # noqa: E731
    assert shapes(timms) == shapes(ours)
    assert sum(p.numel() for p in timms.parameters()) == sum(p.numel() for p in ours.parameters())
    norms = lambda model: [(m.momentum, m.eps) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]  # noqa: E731
    assert norms(timms) == norms(ours)


def test_building_our_models_gives_timm_nothing_to_warn_about(caplog):
    # timm warns when a model has no pretrained config; ours register one rather than silence timm
    with caplog.at_level(logging.WARNING, logger="timm"), torch.device("meta"):
        for name in ("resnet_tiny_32", "efficientnet-b0", "efficientnet-l0"):
            build_model(name, 10, 3, survival_prob=0.8)
    assert caplog.records == []


def test_l2_resolutions_and_multipliers():
    entry = MODELS["efficientnet-l2"]
    assert (entry.width, entry.depth, entry.train_resolution, entry.test_resolution) == (4.3, 5.3, 475, 800)


@pytest.mark.parametrize("name", ["resnet_medium_32", "efficientnet-b0", "efficientnet-l2", "vit_tiny_patch16_224",
                                  "convnext_atto"])
def test_stochastic_depth_reaches_one_minus_survival_exactly_at_the_last_block(name):
    with torch.device("meta"):
        model = build_model(name, 1000, 3, survival_prob=0.8)
    rates = stochastic_depth_rates(model.backbone)
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
    assert all(b > a for a, b in zip(rates, rates[1:]))
    gaps = [b - a for a, b in zip(rates, rates[1:])]
    assert max(gaps) - min(gaps) < 1e-9, "linear in block index"


@pytest.mark.parametrize("name, size", [("vit_tiny_patch16_224", {"img_size": 32}), ("convnext_atto", {})])
def test_stochastic_depth_sets_the_drop_paths_forward_runs_one_rate_per_block(name, size):
    torch.manual_seed(0)
    backbone = timm.create_model(name, num_classes=10, drop_path_rate=0.1, **size).train()
    set_linear_stochastic_depth(backbone, 0.2)
    blocks = stochastic_depth_blocks(backbone)
    slots = [[child for child in block.children() if isinstance(child, DropPath)] for block in blocks]
    assert {len(block_slots) for block_slots in slots} == {2 if name.startswith("vit") else 1}
    assert all(len({slot.drop_prob for slot in block_slots}) == 1 for block_slots in slots), "one rate per block"
    assert [block_slots[0].drop_prob for block_slots in slots] == stochastic_depth_rates(backbone)
    ran = []
    for slot in (slot for block_slots in slots for slot in block_slots):
        slot.register_forward_hook(lambda module, inputs, output: ran.append(module))
    backbone(torch.rand(2, 3, 32, 32))
    assert ran == [slot for block_slots in slots for slot in block_slots], "each once, in the order found"


def test_drop_path_drops_whole_samples_at_its_rate():
    """timm-style: seeded, large batch, observed drop ratio within tolerance of the requested."""
    model = build_model("resnet_tiny_32", 10, 1, survival_prob=0.8).train()
    last = stochastic_depth_blocks(model.backbone)[-1].drop_path
    torch.manual_seed(0)
    out = last(torch.ones(40_000, 4))
    dropped = (out.sum(1) == 0).float().mean().item()
    assert abs(dropped - 0.2) < 0.01
    assert torch.allclose(out[out.sum(1) > 0], torch.full((1,), 1 / 0.8)), "kept samples rescaled by 1/survival"


def test_student_size_error_names_both_models_and_sizes():
    with pytest.raises(UserError) as error:
        check_student_size("efficientnet-b7", "efficientnet-b0", 1000, 3, allow_smaller=False)
    message = str(error.value)
    assert "efficientnet-b0 (5,288,548 parameters)" in message and "efficientnet-b7 (66,347,960 parameters)" in message
    check_student_size("efficientnet-b7", "efficientnet-b0", 1000, 3, allow_smaller=True)
    check_student_size("efficientnet-b0", "efficientnet-b0", 1000, 3, allow_smaller=False)


def test_student_size_also_compares_flops_at_the_training_resolution():
    # efficientnet-b0 has 3x the parameters of resnet_small_32 at 10 classes but fewer FLOPs at 32 px
    check_student_size("resnet_small_32", "efficientnet-b0", 10, 3, allow_smaller=False)
    with pytest.raises(UserError, match="smaller than teacher resnet_small_32 .* in FLOPs"):
        check_student_size("resnet_small_32", "efficientnet-b0", 10, 3, allow_smaller=False, resolution=32)


def test_small_image_models_run_at_28_and_32_px():
    for name in ("resnet_tiny_32", "resnet_small_32", "resnet_slim_32"):
        model = build_model(name, 10, 1).eval()
        for size in (28, 32):
            assert model(torch.rand(2, 1, size, size)).shape == (2, 10)


def test_slim_keeps_the_full_resolution_at_about_smalls_flops():
    from noisystudent.models.registry import count_flops, count_parameters

    slim, small = (build_model(name, 10, 1) for name in ("resnet_slim_32", "resnet_small_32"))
    assert slim.backbone.conv1.stride == (1, 1) and small.backbone.conv1.stride == (2, 2)
    slim_flops, small_flops = (count_flops(name, 10, 1, 32) for name in ("resnet_slim_32", "resnet_small_32"))
    assert 1.2 < slim_flops / small_flops < 1.4  # equal stages; timm's 64-wide stem at 4x the positions
    assert count_parameters("resnet_slim_32", 10, 1) < count_parameters("resnet_small_32", 10, 1) / 3


def test_airnets_take_the_papers_model_noise_and_grow_along_their_family():
    from noisystudent.models.registry import count_flops

    names = ("airnet_small_32", "airnet_medium_32", "airnet_wide_32")
    for name in names:
        model = build_model(name, 10, 1, dropout=0.5, survival_prob=0.8)
        assert timm.is_model(MODELS[name].timm_name)
        assert model.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
        # one stochastic-depth block per conv group, linear from 0 to exactly 1 - survival at the last
        assert stochastic_depth_rates(model.backbone) == pytest.approx([0.0, 0.1, 0.2])
        assert model.backbone.drop_rate == 0.5
    for smaller, larger in zip(names, names[1:]):  # each may be the student of the one before
        check_student_size(smaller, larger, 10, 1, allow_smaller=False, resolution=32)
        assert count_flops(larger, 10, 1, 32) > 2 ** 0.5 * count_flops(smaller, 10, 1, 32)


def test_airnet_noise_is_off_in_eval_and_on_in_training():
    torch.manual_seed(0)
    model = build_model("airnet_small_32", 10, 1, dropout=0.5, survival_prob=0.8)
    images = torch.rand(64, 1, 32, 32)
    model.eval()
    assert torch.equal(model(images), model(images))  # un-noised: what labels the pool
    model.train()
    assert not torch.allclose(model(images), model(images))  # dropout and stochastic depth draw new masks


def test_the_documented_model_table_is_generated_from_the_registry():
    from pathlib import Path

    from noisystudent.models import registry_table

    doc = (Path(__file__).parent.parent / "docs" / "paper-fidelity.md").read_text()
    table = doc.split("<!-- models-table:start -->\n")[1].split("\n<!-- models-table:end -->")[0]
    assert table == registry_table(), "regenerate docs/paper-fidelity.md's table with `noisystudent models`"


def test_two_exports_of_the_same_weights_are_the_same_bytes(tmp_path):
    # a label store records its teacher's file hash: it must identify the weights, not the export
    torch.manual_seed(0)
    model = build_model("resnet_tiny_32", 10, 1, resolution=40)
    for name in ("a", "b", "c"):
        export_weights(tmp_path / f"{name}.safetensors", model)
    assert len({(tmp_path / f"{name}.safetensors").read_bytes() for name in ("a", "b", "c")}) == 1
    assert load_exported(tmp_path / "a.safetensors").spec == model.spec


def test_weights_exported_with_the_old_metadata_layout_still_load(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet_tiny_32", 10, 1)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    old = {"name": "resnet_tiny_32", "num_classes": "10", "in_chans": "1", "mean": "0.286", "std": "0.353"}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=old)
    loaded = load_exported(tmp_path / "old.safetensors")
    assert loaded.spec == model.spec
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_weights_whose_tensors_do_not_match_their_description_are_refused_by_name(tmp_path):
    torch.manual_seed(0)
    small, tiny = build_model("resnet_small_32", 10, 1), build_model("resnet_tiny_32", 10, 1)
    tensors = {k: v.contiguous() for k, v in small.state_dict().items()}
    save_file(tensors, str(tmp_path / "mixed.safetensors"), metadata=tiny.spec.to_metadata())
    with pytest.raises(UserError, match=r"mixed\.safetensors: its tensors are not those of its described model "
                                        r"resnet_tiny_32 \(10 classes, 1 channels\): .*of another shape"):
        load_exported(tmp_path / "mixed.safetensors")


def test_a_model_starts_from_a_timm_file_with_a_new_head_and_an_adapted_first_convolution(tmp_path):
    from timm.models import adapt_input_conv

    from noisystudent.models import load_initial_weights

    torch.manual_seed(0)
    saved = timm.create_model("tf_efficientnet_b0", num_classes=1000, in_chans=3).state_dict()
    torch.save(saved, tmp_path / "b0.pth")  # a file saved by timm's model, ImageNet's head, RGB
    model = build_model("efficientnet-b0", 10, 1)
    fresh_head = model.backbone.classifier.weight.clone()
    load_initial_weights(model, str(tmp_path / "b0.pth"))
    state = model.backbone.state_dict()
    assert torch.equal(state["blocks.3.0.conv_pw.weight"], saved["blocks.3.0.conv_pw.weight"])
    assert torch.equal(state["conv_stem.weight"], adapt_input_conv(1, saved["conv_stem.weight"])), "3 channels -> 1"
    assert torch.equal(state["classifier.weight"], fresh_head), "10 classes, not 1000: a new classifier"


def test_a_model_starts_from_a_runs_exported_weights_and_refuses_another_architecture(tmp_path):
    from noisystudent.models import load_initial_weights

    torch.manual_seed(0)
    previous = build_model("resnet_small_32", 10, 1)
    export_weights(tmp_path / "final.safetensors", previous)
    model = build_model("resnet_small_32", 10, 1)
    load_initial_weights(model, str(tmp_path))  # a stage folder
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), previous.state_dict().values()))
    with pytest.raises(UserError, match=r"init .* does not hold resnet_medium_32's weights|needs .*same model"):
        load_initial_weights(build_model("resnet_medium_32", 10, 1), str(tmp_path))
    with pytest.raises(UserError, match="neither a file nor a timm model name"):
        load_initial_weights(model, "no-such-file.pth")


def test_a_model_trains_at_its_train_resolution_and_evaluates_after_the_official_center_crop(tmp_path):
    """Training inputs are resized to the train resolution; evaluation inputs are center-cropped
    (the kept fraction of the shorter side) and resized to the test resolution; both travel with
    the exported weights, and a FixRes fine-tune trains at the test resolution."""
    from noisystudent.models import export_weights, load_exported
    model = build_model("resnet_tiny_32", 10, 1, train_resolution=16, resolution=24, crop_fraction=0.5)
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    ramp = (torch.arange(32.0).repeat(32, 1) / 31).expand(2, 1, 32, 32)  # column c holds c / 31
    model.train()(ramp)
    model.eval()(ramp)
    assert seen[0].shape[-2:] == (16, 16) and seen[1].shape[-2:] == (24, 24)
    mean, std = model.mean.item(), model.std.item()
    evaluated = seen[1] * std + mean  # back to pixels: the columns 8..23 (the center half), stretched
    assert evaluated.min().item() == pytest.approx(8 / 31, abs=0.02) and evaluated.max().item() == pytest.approx(23 / 31, abs=0.02)
    export_weights(tmp_path / "w.safetensors", model)
    spec = load_exported(tmp_path / "w.safetensors").spec
    assert (spec.train_resolution, spec.resolution, spec.crop_fraction) == (16, 24, 0.5)
    fixres = load_exported(tmp_path / "w.safetensors", train_at_test_resolution=True).spec
    assert fixres.train_resolution == 24


def test_per_model_resolutions_come_from_the_registry():
    from noisystudent.models import model_resolutions
    assert model_resolutions("efficientnet-b0") == {"train_resolution": 224, "resolution": 224, "crop_fraction": 0.875}
    assert model_resolutions("resnet_tiny_32") == {"train_resolution": 32, "resolution": 32, "crop_fraction": None}
    assert model_resolutions("resnet18") == {}, "other timm models take the images as they come"
