import contextlib
import importlib
import signal
import threading

import pytest
import torch

from noisystudent.config import TrainConfig
from noisystudent.data import ImageSet
from noisystudent.errors import UserError
from noisystudent.models import build_model
from noisystudent.noise import RandAugment
from noisystudent.labels import PseudoLabeledSet
from noisystudent.train import BatchBuilder, learning_rate, sample_indices, soft_cross_entropy, train_model
from noisystudent.train import batches as batches_module
from noisystudent.train import loop as loop_module
from noisystudent.train import objective, optim

inference = importlib.import_module("noisystudent.models.inference")  # the module, not the context manager
from noisystudent.models import load_exported, resolved_precision, set_precision


def labeled_set(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g),
                    torch.arange(n) % 10, [f"l{i}" for i in range(n)], list("abcdefghij"))


def pseudo_set(n=90, seed=1, k=3):
    """Soft top-k targets over 10 classes, as the label store gives them."""
    g = torch.Generator().manual_seed(seed)
    class_ids = torch.rand(n, 10, generator=g).argsort(1)[:, :k]
    probs = torch.rand(n, k, generator=g).softmax(1)
    return PseudoLabeledSet(torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g), class_ids, probs, 10)


def build_batch(step, seed, labeled, config, device, pseudo, randaugment, rank=0, world_size=1):
    return BatchBuilder(labeled, config, seed, device, pseudo, randaugment, rank, world_size).build(step)


def test_joint_batch_is_b_labeled_plus_r_times_b_pseudo_labeled():
    labeled, pseudo = labeled_set(), pseudo_set()
    config = TrainConfig(batch_size=8, unlabeled_ratio=3, augment=False, label_smoothing=0.0)
    inputs, targets = build_batch(5, 0, labeled, config, torch.device("cpu"), pseudo, None)
    assert inputs.shape == (8 + 24, 1, 32, 32) and targets.shape == (32, 10)
    # the first B rows are labeled images with one-hot targets, the rest pseudo-labeled with soft ones
    rows = sample_indices(len(labeled), 8, 5, 0, batches_module.LABELED_STREAM)
    assert torch.equal(inputs[:8], labeled.images[rows].float() / 255)
    assert torch.equal(targets[:8].argmax(1), labeled.labels[rows]) and torch.equal(targets[:8].sum(1), torch.ones(8))
    unlabeled_rows = sample_indices(len(pseudo), 24, 5, 0, batches_module.UNLABELED_STREAM)
    expected = torch.zeros(24, 10)
    for i, image in enumerate(unlabeled_rows.tolist()):
        expected[i, pseudo.class_ids[image]] = pseudo.probs[image]
    assert torch.equal(targets[8:], expected), "sparse targets made dense per batch"
    assert torch.equal(inputs[8:], pseudo.images[unlabeled_rows].float() / 255)
    # label smoothing touches the labeled targets only
    _, smoothed = build_batch(5, 0, labeled, TrainConfig(batch_size=8, unlabeled_ratio=3, label_smoothing=0.1),
                              torch.device("cpu"), pseudo, None)
    assert smoothed[:8].max().item() == pytest.approx(0.91) and smoothed[:8].min().item() == pytest.approx(0.01)
    assert torch.equal(smoothed[8:], targets[8:])


def test_duplicated_pseudo_labels_are_drawn_as_often_as_their_copies():
    """Counts, not copied pixels: an image with 3 copies is drawn 3x as often as one with 1."""
    hard = torch.arange(3).view(3, 1), torch.ones(3, 1)  # image i is class i, of 10 like the labeled set
    pseudo = PseudoLabeledSet(torch.arange(3, dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 32, 32).clone(),
                              *hard, 10, copies=torch.tensor([3, 0, 1]))
    assert len(pseudo) == 4 and pseudo.rows.tolist() == [0, 0, 0, 2]
    config = TrainConfig(batch_size=1, unlabeled_ratio=20_000, augment=False, label_smoothing=0.0)
    _, drawn = build_batch(0, 0, labeled_set(), config, torch.device("cpu"), pseudo, None)
    counts = drawn[1:, :3].sum(0)
    assert counts[1] == 0 and abs(counts[0] / counts.sum() - 0.75) < 0.01


def test_randaugment_switch_changes_only_the_inputs():
    labeled, pseudo = labeled_set(), pseudo_set()
    config = TrainConfig(batch_size=8, unlabeled_ratio=2)
    clean, t1 = build_batch(0, 0, labeled, config, torch.device("cpu"), pseudo, None)
    noised, t2 = build_batch(0, 0, labeled, config, torch.device("cpu"), pseudo, RandAugment(2, 10))
    assert torch.equal(t1, t2)
    assert not torch.equal(clean, noised)


def test_sampler_visits_every_row_once_per_epoch():
    rows = torch.cat([sample_indices(10, 4, step, 0, 1) for step in range(5)])  # 2 epochs
    assert sorted(rows[:10].tolist()) == list(range(10)) and sorted(rows[10:].tolist()) == list(range(10))


def test_soft_cross_entropy_equals_cross_entropy_on_one_hot():
    logits = torch.randn(16, 10)
    labels = torch.randint(0, 10, (16,))
    one_hot = torch.nn.functional.one_hot(labels, 10).float()
    assert torch.allclose(soft_cross_entropy(logits, one_hot), torch.nn.functional.cross_entropy(logits, labels))


def test_learning_rate_warms_up_then_decays_to_zero():
    lrs = [learning_rate(s, 100, 10, 0.1) for s in range(101)]
    assert lrs[9] == pytest.approx(0.1) and lrs[0] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[100] == pytest.approx(0.0, abs=1e-12)


def _train(stage_dir, config, labeled, pseudo):
    torch.manual_seed(123)
    model = build_model("resnet_tiny_32", 10, 1, dropout=0.3, survival_prob=0.8)
    return train_model(model, labeled, config, stage_dir, seed=7, device=torch.device("cpu"), pseudo=pseudo,
                       randaugment=RandAugment(2, 10), desc="student test")


def _crash_then_resume(stage_dir, config, labeled, pseudo, monkeypatch, crash_at_call):
    """Train until the loss is computed `crash_at_call` times, crash, then run again to the end."""
    real_loss, calls = objective.soft_cross_entropy, {"n": 0}

    def crashing_loss(logits, targets):
        calls["n"] += 1
        if calls["n"] == crash_at_call:
            raise KeyboardInterrupt("simulated crash")
        return real_loss(logits, targets)

    monkeypatch.setattr(objective, "soft_cross_entropy", crashing_loss)
    with pytest.raises(KeyboardInterrupt):
        _train(stage_dir, config, labeled, pseudo)
    monkeypatch.setattr(objective, "soft_cross_entropy", real_loss)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_interrupted_training_resumes_to_identical_weights(tmp_path, monkeypatch, precision):
    labeled, pseudo = labeled_set(), pseudo_set()
    config = TrainConfig(epochs=2, batch_size=8, unlabeled_ratio=2, checkpoint_every=3, warmup_epochs=0.5)
    set_precision(precision)
    straight = _train(tmp_path / "straight", config, labeled, pseudo)
    _crash_then_resume(tmp_path / "resumed", config, labeled, pseudo, monkeypatch, crash_at_call=8)
    assert (tmp_path / "resumed" / "checkpoints" / "last.pt").is_file()
    assert not (tmp_path / "resumed" / "final.safetensors").exists()
    resumed = _train(tmp_path / "resumed", config, labeled, pseudo)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "metrics log has no repeated steps after a resume"


def test_exported_weights_rebuild_the_model(tmp_path):
    labeled = labeled_set()
    config = TrainConfig(epochs=1, batch_size=8)
    model = train_model(build_model("resnet_tiny_32", 10, 1), labeled, config, tmp_path, 0, torch.device("cpu"))
    loaded = load_exported(tmp_path).eval()
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), loaded(x), atol=1e-6)


def test_diverging_loss_stops_with_the_step_named(tmp_path):
    labeled = labeled_set()
    config = TrainConfig(epochs=1, batch_size=8, lr=1e30, warmup_epochs=0)
    with pytest.raises(UserError, match=r"^teacher: loss became non-finite \(nan on rank 0\) at step 1; lower teacher\.lr "
                                        r"\(now 1e\+30\) or check the data$"):
        train_model(build_model("resnet_tiny_32", 10, 1), labeled, config, tmp_path, 0, torch.device("cpu"),
                    desc="teacher", config_key="teacher")
    assert not (tmp_path / "final.safetensors").exists(), "a diverged stage exports nothing"


def test_ema_weights_are_exported_and_resume_exactly(tmp_path, monkeypatch):
    labeled, pseudo = labeled_set(), pseudo_set()
    config = TrainConfig(epochs=2, batch_size=8, unlabeled_ratio=2, checkpoint_every=3, ema_decay=0.9)
    straight = _train(tmp_path / "straight", config, labeled, pseudo)
    raw = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    exported = load_exported(tmp_path / "straight").state_dict()
    assert all(torch.equal(exported[k], raw["ema"][k]) for k in exported), "EMA weights are the exported ones"
    assert any(not torch.equal(raw["ema"][k], raw["model"][k]) for k in raw["model"] if raw["model"][k].is_floating_point())
    _crash_then_resume(tmp_path / "resumed", config, labeled, pseudo, monkeypatch, crash_at_call=5)
    resumed = _train(tmp_path / "resumed", config, labeled, pseudo)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_official_schedule_is_a_staircase_of_0_97_every_2_4_epochs_from_step_0():
    # tensorflow/tpu models/official/efficientnet/utils.py build_learning_rate: exponential_decay of
    # the global step (staircase, x0.97 every decay_steps), replaced by the linear warm-up for the
    # first warmup_steps; noisystudent main.py: decay_epochs = 2.4 * train_ratio. 10 steps an epoch:
    # decay every 24 steps, counted from step 0, not from the end of the warm-up.
    lrs = [learning_rate(s, 1000, 10, 0.016, "exponential", steps_per_epoch=10) for s in range(100)]
    assert lrs[9] == pytest.approx(0.016) and lrs[10] == pytest.approx(0.016) and lrs[23] == pytest.approx(0.016)
    assert lrs[24] == pytest.approx(0.016 * 0.97) and lrs[48] == pytest.approx(0.016 * 0.97 ** 2)
    longer = learning_rate(48, 1000, 10, 0.016, "exponential", steps_per_epoch=10, decay_epochs=4.8)  # train_ratio 2
    assert longer == pytest.approx(0.016 * 0.97)


def test_official_optimizer_preset_is_tf_rmsprop_eps_inside_the_root_and_mean_square_from_one():
    # tensorflow/tpu efficientnet utils.build_optimizer: RMSPropOptimizer(lr, decay=0.9,
    # momentum=0.9, epsilon=1e-3); TF1 starts the mean square at 1 and adds eps under the root.
    weight = torch.nn.Parameter(torch.zeros(1))
    model = torch.nn.Module()
    model.weight = weight
    optimizer = optim.make_optimizer(model, TrainConfig(optimizer="rmsprop", lr=0.128, weight_decay=0))
    (2.0 * weight).sum().backward()  # gradient 2
    optimizer.step()
    mean_square = 0.9 * 1.0 + 0.1 * 2.0 ** 2
    assert weight.item() == pytest.approx(-0.128 * 2.0 / (mean_square + 1e-3) ** 0.5, rel=1e-6)
    # torch.optim.RMSprop would have taken -0.128 * 2 / (sqrt(0.4) + 1e-3): 1.8x larger here


def test_official_weight_decay_skips_batchnorm_only():
    # noisystudent main.py: weight decay over every trainable variable without 'batch_normalization'
    model = build_model("efficientnet-b0", 10, 3)
    groups = optim.make_optimizer(model, TrainConfig(weight_decay=1e-5, weight_decay_norms=False)).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] == 1e-5 for p in g["params"]}
    norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    for name, parameter in model.named_parameters():
        assert (id(parameter) in decayed) == (id(parameter) not in norms), name
    assert any("conv_reduce.bias" in name for name, p in model.named_parameters() if id(p) in decayed), "SE biases decay"
    everything = optim.make_optimizer(model, TrainConfig(weight_decay=1e-5)).param_groups
    assert sum(len(g["params"]) for g in everything if g["weight_decay"] == 1e-5) == len(list(model.parameters()))


def test_ema_decay_is_the_official_min_of_decay_and_warmup():
    # tf.train.ExponentialMovingAverage(decay, num_updates): min(decay, (1 + n) / (10 + n))
    assert optim.ema_decay(0.9999, 1) == pytest.approx(2 / 11)
    assert optim.ema_decay(0.9999, 90) == pytest.approx(91 / 100)
    assert optim.ema_decay(0.9999, 10**6) == 0.9999


def test_official_loss_weighting_is_labeled_mean_plus_ratio_times_pseudo_labeled_mean():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    rows = -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1)
    official = objective.joint_loss(logits, targets, 2, TrainConfig(unlabeled_ratio=2, loss_weighting="official"))
    assert official.item() == pytest.approx((rows[:2].mean() + 2 * rows[2:].mean()).item())
    assert objective.joint_loss(logits, targets, 2, TrainConfig(unlabeled_ratio=2)).item() == pytest.approx(rows.mean().item())
    teacher = objective.joint_loss(logits, targets, 6, TrainConfig(loss_weighting="official"))
    assert teacher.item() == pytest.approx(rows.mean().item()), "no pseudo-labeled rows: the labeled mean"


def test_student_schedule_can_follow_the_labeled_data():
    by_selection = loop_module.steps_for(TrainConfig(epochs=2, batch_size=10, unlabeled_ratio=3), 100, 3000)
    by_labeled = loop_module.steps_for(TrainConfig(epochs=2, batch_size=10, unlabeled_ratio=3, epoch_unit="labeled"),
                                       100, 3000)
    assert by_selection == (200, 100) and by_labeled == (20, 10)


def test_fixres_finetune_freezes_shallow_layers_and_adapts_the_rest(tmp_path):
    labeled = labeled_set()
    trained = train_model(build_model("resnet_tiny_32", 10, 1), labeled, TrainConfig(epochs=1, batch_size=8),
                          tmp_path / "student", 0, torch.device("cpu"))
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    model = load_exported(tmp_path / "student", resolution=40)
    assert model.spec.resolution == 40
    frozen = loop_module.freeze_shallow_layers(model, 0.5)
    frozen_names = {name for name, module in model.named_modules() if any(module is f for f in frozen)}
    finetuned = train_model(model, labeled, TrainConfig(epochs=2, batch_size=8, augment=False, warmup_epochs=0),
                            tmp_path / "finetune", 0, torch.device("cpu"), freeze_fraction=0.5)
    after = finetuned.state_dict()
    assert "backbone.conv1" in frozen_names and "backbone.fc" not in frozen_names
    for key, value in after.items():
        layer = key.rsplit(".", 1)[0]
        if layer in frozen_names:
            assert torch.equal(value, before[key]), f"frozen {key} changed (BN statistics included)"
    changed_bn = [k for k in after if k.endswith("running_mean") and k.rsplit(".", 1)[0] not in frozen_names
                  and not torch.equal(after[k], before[k])]
    assert changed_bn, "unfrozen BatchNorms re-estimate their statistics at the new resolution"
    assert not torch.equal(after["backbone.fc.weight"], before["backbone.fc.weight"])
    assert load_exported(tmp_path / "finetune").spec.resolution == 40, "the resolution travels with the weights"


@pytest.mark.parametrize("world_size", [2, 4])
def test_each_rank_builds_its_own_rows_of_the_one_process_batch(world_size):
    """Under torchrun a rank gathers and augments only rows rank, rank + W, ...; together they are
    exactly the batch one process builds, augmentation and RandAugment included."""
    labeled, pseudo = labeled_set(), pseudo_set()
    config = TrainConfig(batch_size=8, unlabeled_ratio=3)
    cpu, noise = torch.device("cpu"), RandAugment(2, 10, pixels="relative")
    whole_inputs, whole_targets = build_batch(3, 0, labeled, config, cpu, pseudo, noise)
    for rank in range(world_size):
        inputs, targets = build_batch(3, 0, labeled, config, cpu, pseudo, noise, rank, world_size)
        assert len(inputs) == (8 + 24) // world_size
        assert torch.equal(inputs, whole_inputs[rank::world_size]) and torch.equal(targets, whole_targets[rank::world_size])
        labeled_rows = 8 // world_size
        assert torch.all(targets[:labeled_rows].max(1).values > 0.9) and torch.all(targets[labeled_rows:].max(1).values < 0.9), \
            "a rank's labeled rows come first"


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetched_batches_are_the_batches_built_on_demand(depth):
    labeled, pseudo = labeled_set(), pseudo_set()
    builder = BatchBuilder(labeled, TrainConfig(batch_size=8, unlabeled_ratio=2), 0, torch.device("cpu"), pseudo,
                           RandAugment(2, 10))
    ahead = list(batches_module.Prefetcher(builder.build, range(2, 9), depth))
    assert [step for step, _ in ahead] == list(range(2, 9))
    for step, (inputs, targets) in ahead:
        expected_inputs, expected_targets = builder.build(step)
        assert torch.equal(inputs, expected_inputs) and torch.equal(targets, expected_targets)


@contextlib.contextmanager
def fails_after(seconds: int, built: list, release: threading.Event | None = None):
    """A hang inside the block fails the test after `seconds` (SIGALRM; pytest-timeout is not a
    dependency) instead of stalling the suite; `release` frees builders parked on it."""
    def hung(signum, frame):
        if release is not None:
            release.set()
        raise TimeoutError(f"the prefetcher hung; built {sorted(built)}")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        if release is not None:
            release.set()


def no_batch_workers() -> bool:
    return not [thread for thread in threading.enumerate() if thread.name.startswith("batches")]


def test_prefetch_passes_errors_on_and_stops_early_without_hanging():
    """The error of step 4 reaches the loop, and the loop's end takes the workers with it: what was
    in flight (5 and 6 at depth 2) finishes, nothing beyond is built, no worker thread is left. A
    build past them waits for a release that comes only after the loop, so a prefetcher that keeps
    building ahead hangs: the alarm fails the test then instead of stalling the suite."""
    built, release = [], threading.Event()

    def build(step):
        built.append(step)
        if step == 4:
            raise ValueError("bad image at step 4")
        if step > 6:
            release.wait()
        return step

    with fails_after(10, built, release):
        with pytest.raises(ValueError, match="step 4"):
            for step, batch in batches_module.Prefetcher(build, range(10), 2):
                assert batch == step
    assert max(built) <= 6, "at most depth + 1 batches are in flight"
    assert no_batch_workers(), "the workers are gone"


def test_leaving_the_prefetch_loop_early_finishes_the_workers_without_hanging():
    """A preemption leaves the loop at step 3: the batches in flight (4 and 5 at depth 2) finish and
    the workers go. A batch beyond them would never finish here (it waits for a release that
    comes only after the loop), so building ahead without bound hangs: an alarm fails the test
    after 10 s instead of stalling the suite."""
    built, release = [], threading.Event()

    def build(step):
        built.append(step)
        if step > 5:
            release.wait()
        return step

    with fails_after(10, built, release):
        batches = iter(batches_module.Prefetcher(build, range(100), 2))
        for step, batch in batches:
            assert batch == step
            if step == 3:
                break
        batches.close()  # as dropping the loop does, but an error in it is raised here, not ignored
    assert sorted(built)[:4] == [0, 1, 2, 3] and max(built) <= 5, "what was in flight finished, nothing more started"
    assert no_batch_workers(), "the workers are gone"


def test_stop_flags_are_read_in_one_go():
    from noisystudent.distributed import SINGLE
    assert SINGLE.any_of(torch.tensor(False), True, torch.tensor(True), device=torch.device("cpu")) == [False, True, True]


def test_bf16_autocast_trains_in_bf16_with_fp32_weights(tmp_path):
    """The step's convolutions run in bf16 (so the weights differ from fp32 training's, by a little),
    while the weights, their gradients and the exported file stay fp32."""
    labeled, pseudo = labeled_set(), pseudo_set()
    config = TrainConfig(epochs=1, batch_size=8, unlabeled_ratio=2)
    weights = {}
    for precision in ("fp32", "bf16"):
        set_precision(precision)
        weights[precision] = _train(tmp_path / precision, config, labeled, pseudo).state_dict()
        assert all(w.dtype == torch.float32 for w in weights[precision].values() if w.is_floating_point())
    float_names = [k for k, w in weights["fp32"].items() if w.is_floating_point()]
    gaps = [(weights["bf16"][k] - weights["fp32"][k]).abs().max().item() for k in float_names]
    assert max(gaps) > 0, "bf16 autocast changed nothing: it did not reach the training step"
    assert max(gaps) < 0.05, "bf16 and fp32 training take the same path, apart from rounding"


def test_auto_precision_is_bf16_where_the_hardware_computes_it_natively(monkeypatch):
    cpu = torch.device("cpu")
    set_precision("auto")
    assert resolved_precision(cpu) == "fp32", "a CPU without bf16 units (conftest) emulates bf16, slower than fp32"
    monkeypatch.setattr(inference, "_cpu_has_native_bf16", lambda: True)
    assert resolved_precision(cpu) == "bf16"
    assert resolved_precision(torch.device("cuda")) == "bf16" and resolved_precision(torch.device("mps")) == "fp32"
    set_precision("fp32")
    assert resolved_precision(cpu) == resolved_precision(torch.device("cuda")) == "fp32"
    set_precision("bf16")
    assert resolved_precision(cpu) == "bf16"
    with pytest.raises(UserError, match="precision 'fp16' is not one of auto, bf16, fp32"):
        set_precision("fp16")
