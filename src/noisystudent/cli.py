"""Command line: `noisystudent demo | run | plan | evaluate | label | predict | export | sweep | report | config | models`.

Mistakes a user can fix (config, paths, data, a folder that cannot be written) print one line and
exit with code 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from importlib import resources
from pathlib import Path

from .errors import UserError
from .version import __version__

OVERRIDES_HELP = "dotted overrides, e.g. student.unlabeled_ratio=7 noise.dropout=0 models=resnet_small_32,resnet_medium_32"

DESCRIPTION = """\
Noisy Student Training (Xie et al., CVPR 2020) on your CPU or GPU.

A teacher trains on labeled images; it labels an unlabeled pool un-noised; confident pseudo
labels are balanced per class; an equal-or-larger student trains on labeled + pseudo-labeled
images with noise (RandAugment, dropout, stochastic depth); the student becomes the next
teacher. Everything lands in runs/<name>/ and a rerun resumes where it stopped.

examples:
  noisystudent demo --quick              # every stage on a Fashion-MNIST subset, a few minutes
  noisystudent demo                      # the full demo (1,000 labels, 59k unlabeled, 2 rounds)
  noisystudent run configs/demo.yaml student.unlabeled_ratio=7 name=ratio7
  noisystudent plan demo                 # each stage's images, FLOPs, disk and time, before running it
  noisystudent evaluate runs/demo/round-2/student --baseline runs/demo/round-0/teacher
  noisystudent label runs/demo/round-0/teacher labels/ --config configs/demo.yaml
  noisystudent predict runs/demo/round-2/student my-images/ --output predictions.csv
  noisystudent config > mine.yaml        # every setting, documented: start your own config here
  noisystudent report runs/demo          # report.html: plots of accuracy, robustness, selection
  noisystudent models                    # model names for the `models` list
"""


def bundled_config(name: str) -> Path:
    return Path(str(resources.files("noisystudent") / "configs" / f"{name}.yaml"))


def resolve_config(config: Path | None) -> Path | None:
    """A config path as given, or the name of a bundled one (demo, smoke, imagenet-paper), so that
    `noisystudent run demo` works without a checkout of the repository."""
    if config is None or config.exists() or config.suffix or len(config.parts) > 1:
        return config
    bundled = bundled_config(str(config))
    if not bundled.is_file():
        names = sorted(path.stem for path in bundled.parent.glob("*.yaml"))
        raise UserError(f"config {config}: no such file, nor a bundled config of that name; bundled: "
                        f"{', '.join(names)} (or give a YAML file's path)")
    return bundled


def comma_list(kind):
    """An argparse type: "a,b,c" -> [kind(a), kind(b), kind(c)]."""
    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from None
    return parse


def cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .pipeline import run

    run(load_config(resolve_config(args.config), args.overrides))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    args.config = bundled_config("smoke" if args.quick else "demo")
    return cmd_run(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .config import load_config
    from .evaluate import evaluate_weights
    from .session import start_session

    config = load_config(args.config, args.overrides)
    session = start_session(config, test_only=True)

    def evaluate(path: Path, baseline: dict | None = None) -> dict:
        result = evaluate_weights(path, session.test, session.device, config.evaluate, config.corruption_cache(),
                                  config.seed, baseline)
        return {"checkpoint": str(path), **result}

    result = evaluate(args.checkpoint, None if args.baseline is None else evaluate(args.baseline))
    text = json.dumps(result, indent=2)
    if args.output is not None:
        from .io import write_text

        write_text(args.output, text + "\n")
    print(text)
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from .config import load_config
    from .distributed import init_from_environment
    from .labels import damaged_shards, label_with_weights
    from .session import start_session

    config = load_config(args.config, args.overrides)
    distributed, device_name = init_from_environment(config.device)
    session = start_session(config, device_name)  # the reference held out as a run holds it
    store = label_with_weights(args.teacher, session.unlabeled, config.labels, args.output, session.device,
                               distributed, labeled=session.labeled, reference=session.reference)
    if distributed.is_main:
        manifest = store.manifest
        print(f"{manifest['count']} images in {len(manifest['shards'])} shards, top-{manifest['stored_k']} per image: "
              f"{args.output}")
        for reason in damaged_shards(manifest):
            print(f"noisystudent: warning: {reason}", file=sys.stderr)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .distributed import init_from_environment
    from .models import resolve_device, set_precision
    from .predict import predict_to_file

    set_precision(args.precision)
    distributed, device_name = init_from_environment(args.device)  # under torchrun: each rank its chunks
    result = predict_to_file(args.weights, args.source, args.output, resolve_device(device_name), args.batch_size,
                             args.top_k, args.max_bad_fraction, args.decode_threads, args.image_size, args.overwrite,
                             distributed, args.chunk_size)
    if distributed.is_main:
        listed = f", listed in {result['undecodable_list']}" if result["undecodable"] else ""
        print(f"{result['images']} images -> {result['output']} ({result['undecodable']} undecodable{listed})")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import describe, load_sweep, run_sweep

    sweep = load_sweep(args.sweep, resolve_config, args.variants, args.seeds)
    if args.dry_run:
        print("\n".join(describe(sweep)))
        return 0
    if args.jobs < 1:
        raise UserError("--jobs must be >= 1")
    run_sweep(sweep, args.jobs)
    print(f"table: {sweep.root / 'table.md'}\nreport: {sweep.root / 'report.html'}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from .config import load_config
    from .plan import format_table, plan_costs

    if args.probe_steps < 1:
        raise UserError("--probe-steps must be >= 1")
    if not args.probe_seconds >= 0:  # NaN too
        raise UserError(f"--probe-seconds {args.probe_seconds}: must be >= 0 (0 probes nothing, as --no-probe)")
    config = load_config(resolve_config(args.config), args.overrides)
    costs = plan_costs(config, probe=not args.no_probe, probe_steps=args.probe_steps,
                       log=lambda line: print(line, file=sys.stderr), probe_seconds=args.probe_seconds)
    print(json.dumps([asdict(cost) for cost in costs], indent=2) if args.json else format_table(costs))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .models.export import export_model

    print(export_model(args.weights, args.format, args.output, args.overwrite))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .config import commented_yaml, load_config

    if args.config is not None and "=" in str(args.config):  # `noisystudent config key=value`: no file given
        args.config, args.overrides = None, [str(args.config), *args.overrides]
    print(commented_yaml(load_config(resolve_config(args.config), args.overrides)), end="")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    for name, path in build_report(args.run_dir).items():
        print(f"{name}: {path}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import MODELS, registry_table

    print(registry_table())
    print("\nwhy each small-image variant exists:")
    for name, entry in MODELS.items():
        if entry.width is None:
            print(f"  {name:18s} {entry.why}")
    print("any other timm model name works too (timm's own defaults)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .config import PRECISIONS
    from .plan import PROBE_SECONDS, PROBE_STEPS

    parser = argparse.ArgumentParser(prog="noisystudent", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"noisystudent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="run the embedded Fashion-MNIST default", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run Noisy Student on Fashion-MNIST (Debian package dataset-fashion-mnist).\n\n"
                    "example:\n  noisystudent demo --quick\n  noisystudent demo rounds=3 name=demo3")
    demo.add_argument("--quick", action="store_true", help="tiny models and a data subset: every stage in minutes")
    demo.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    demo.set_defaults(func=cmd_demo)

    run = commands.add_parser(
        "run", help="run a config file", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every round of a config; a rerun skips finished stages and resumes training.\n\n"
                    "example:\n  noisystudent run configs/demo.yaml labels.kind=hard name=demo-hard")
    run.add_argument("config", type=Path, help="YAML config, or the name of a bundled one: demo, smoke, imagenet-paper")
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    run.set_defaults(func=cmd_run)

    evaluate = commands.add_parser(
        "evaluate", help="accuracy, calibration and robustness of exported weights",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a stage folder or its final.safetensors on the configured test set: top-1/top-5,\n"
                    "per-class accuracy, confusion matrix, ECE (15 bins); with evaluate.robustness (default on),\n"
                    "on evaluate.images test images (stratified by class): 15 ImageNet-C corruptions x 5 severities, ImageNet-P\n"
                    "style perturbation flip probabilities, FGSM and PGD accuracy per epsilon. --baseline adds\n"
                    "mCE, relative mCE and mFR against another model.\n\n"
                    "example:\n  noisystudent evaluate runs/demo/round-2/student --baseline runs/demo/round-0/teacher\n"
                    "  noisystudent evaluate runs/demo/round-0/teacher evaluate.robustness=false")
    evaluate.add_argument("checkpoint", type=Path, help="stage folder or .safetensors file")
    evaluate.add_argument("--config", type=Path, default=None, help="config whose data and evaluate sections to use")
    evaluate.add_argument("--baseline", type=Path, default=None,
                          help="model whose errors normalize mCE and mFR (e.g. the round-0 teacher)")
    evaluate.add_argument("--output", type=Path, default=None, help="also write the JSON here (eval.json)")
    evaluate.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.test_limit=1000 device=cpu")
    evaluate.set_defaults(func=cmd_evaluate)

    label = commands.add_parser(
        "label", help="pseudo-label the unlabeled pool with exported weights (torchrun: sharded over ranks)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a model un-noised over the config's unlabeled pool into a sharded Parquet store\n"
                    "(id, argmax, confidence, top-k ids and float16 probabilities; labels/store.py). Resumable:\n"
                    "rerun the same command after a crash. The pool is decoded a batch at a time, never held in\n"
                    "memory; undecodable files are skipped and listed per shard in manifest.json. Under torchrun\n"
                    "each rank labels its own shards.\n\n"
                    "example:\n  noisystudent label runs/demo/round-0/teacher pool-labels --config configs/demo.yaml\n"
                    "  torchrun --nproc_per_node=8 --no-python noisystudent label teacher/ labels/ --config my.yaml")
    label.add_argument("teacher", type=Path, help="stage folder or .safetensors file")
    label.add_argument("output", type=Path, help="store directory (created; resumed if it exists)")
    label.add_argument("--config", type=Path, default=None, help="config whose data and labels sections to use")
    label.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="e.g. labels.shard_size=100000 data.decode_threads=8 (threads decoding ahead of the model)")
    label.set_defaults(func=cmd_label)

    report = commands.add_parser(
        "report", help="rebuild report.html / report.md of a run", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Plots and tables from a finished run directory (also written at the end of every run):\n"
                    "accuracy per round, corruption errors, adversarial accuracy, pseudo-label confidence,\n"
                    "per-class selection, learning curves.\n\nexample:\n  noisystudent report runs/demo")
    report.add_argument("run_dir", type=Path, help="runs/<name>")
    report.set_defaults(func=cmd_report)

    predict = commands.add_parser(
        "predict", help="classify images with exported weights into CSV, JSONL or Parquet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Classify every image of SOURCE (a folder tree, a .csv / .jsonl manifest, or tar shards\n"
                    "pool-{0000..0099}.tar) with exported weights, streamed a batch at a time. The weights carry\n"
                    "their preprocessing (image size, channels, normalization) and class names; each output row\n"
                    "has the image id, the top-k class names and their probabilities. The output's extension\n"
                    "picks the format. Undecodable images are listed in OUTPUT.undecodable.csv. Chunks of 10,000\n"
                    "images go to OUTPUT.parts/ first, so a rerun after a stop redoes only the missing ones; under\n"
                    "torchrun each process predicts its share of the chunks and rank 0 joins them.\n\n"
                    "example:\n  noisystudent predict runs/demo/round-2/student my-images/ --output predictions.csv\n"
                    "  noisystudent predict runs/demo/round-2/student shards-{000..009}.tar --output p.parquet --top-k 3\n"
                    "  torchrun --nproc_per_node=8 --no-python noisystudent predict student/ pool/ --output p.parquet")
    predict.add_argument("weights", type=Path, help="stage folder or .safetensors file")
    predict.add_argument("source", help="folder, manifest or tar shard pattern")
    predict.add_argument("--output", type=Path, required=True, help="predictions file: .csv, .jsonl or .parquet")
    predict.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    predict.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    predict.add_argument("--precision", default="auto", choices=PRECISIONS,
                         help="bf16 autocast or fp32; auto (default): bf16 on GPUs and CPUs with bf16 units")
    predict.add_argument("--max-bad-fraction", type=float, default=0.01,
                         help="undecodable images tolerated before stopping (default 0.01)")
    predict.add_argument("--decode-threads", type=int, default=2, help="threads decoding ahead (default 2)")
    predict.add_argument("--image-size", type=int, default=None,
                         help="only for weights exported before they recorded their image size")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    predict.add_argument("--chunk-size", type=int, default=10_000,
                         help="images per part file, the unit a rerun redoes and torchrun shares out (default 10000)")
    predict.set_defaults(func=cmd_predict)

    sweep = commands.add_parser(
        "sweep", help="run named variants x seeds and tabulate them with error bars",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every (variant, seed) of a sweep file as an ordinary run under runs/sweeps/<name>/,\n"
                    "resumably (a finished run is kept, an interrupted one resumes), --jobs at once. Writes\n"
                    "table.md / table.json (mean and sample std over seeds of every round and the gain, paired\n"
                    "differences against the reference variant), plot.png and report.html. The sweep file's\n"
                    "format is in noisystudent/sweep.py; configs/sweeps/ has the paper's ablations.\n\n"
                    "Paired differences pair runs made on the same machine only (the same seed gives other\n"
                    "numbers on another CPU); to continue a sweep elsewhere, run the reference and the\n"
                    "remaining variants there on new seeds.\n\n"
                    "example:\n  noisystudent sweep configs/sweeps/paper-ablations.yaml --dry-run\n"
                    "  noisystudent sweep configs/sweeps/paper-ablations.yaml --jobs 2\n"
                    "  noisystudent sweep configs/sweeps/paper-ablations.yaml --variants full,rounds-3 --seeds 3,4,5")
    sweep.add_argument("sweep", type=Path, help="sweep YAML file")
    sweep.add_argument("--jobs", type=int, default=1, help="runs at once (CPU threads are split between them)")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs, which are finished, and the time left")
    sweep.add_argument("--variants", type=comma_list(str), default=None,
                       help="run only these variants, in this order (comma-separated; the table still shows every finished run)")
    sweep.add_argument("--seeds", type=comma_list(int), default=None,
                       help="run these seeds instead of the file's (comma-separated), e.g. on another machine")
    sweep.set_defaults(func=cmd_sweep)

    plan = commands.add_parser(
        "plan", help="what a run will cost per stage (images, steps, FLOPs, disk, time) before it starts",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="For each stage of each round: images, optimizer steps, parameters, FLOPs per image, the\n"
                    "disk it writes and its time on this device, from a short probe of the real training,\n"
                    "labeling and evaluation code on synthetic data of the run's shapes, with a progress bar\n"
                    "(a minute or two for the demo). Each probe takes at most --probe-steps timed steps, and\n"
                    "none starts after --probe-seconds of probing: the stages left unprobed show time \"?\".\n"
                    "Nothing is written under runs/. A pool of tar shards has no size before it is read, and\n"
                    "a selection's size is an upper bound unless selection.images_per_class is set.\n\n"
                    "example:\n  noisystudent plan demo\n  noisystudent plan configs/imagenet-paper.yaml --no-probe\n"
                    "  noisystudent plan demo student.epochs=7 --json > plan.json")
    plan.add_argument("config", type=Path, help="YAML config, or the name of a bundled one: demo, smoke, imagenet-paper")
    plan.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    plan.add_argument("--json", action="store_true", help="print the stages as JSON instead of a table")
    plan.add_argument("--no-probe", action="store_true",
                      help="sizes only, no timing probe (for models this device cannot run)")
    plan.add_argument("--probe-steps", type=int, default=PROBE_STEPS,
                      help=f"timed steps per probe: training steps, inference batches (default {PROBE_STEPS})")
    plan.add_argument("--probe-seconds", type=float, default=PROBE_SECONDS,
                      help=f"no probe starts after this many seconds of probing; one already started finishes "
                           f"(default {PROBE_SECONDS:g})")
    plan.set_defaults(func=cmd_plan)

    export = commands.add_parser(
        "export", help="write exported weights as ONNX or TorchScript for serving",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a stage's weights as ONNX (dynamic batch axis) or TorchScript. The graph takes float\n"
                    "images in [0, 1] of shape [N, C, S, S] at the model's image size and returns logits;\n"
                    "normalization is inside it. The model's description (classes, image size, mean / std)\n"
                    "is in the ONNX metadata ('noisystudent') or the TorchScript extra file noisystudent.json.\n"
                    "ONNX needs `pip install 'noisystudent[export]'`; PyTorch deprecates TorchScript.\n\n"
                    "example:\n  noisystudent export runs/demo/round-2/student --format onnx\n"
                    "  noisystudent export runs/demo/round-2/student --format torchscript --output student.pt")
    export.add_argument("weights", type=Path, help="stage folder or .safetensors file")
    export.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="default onnx")
    export.add_argument("--output", type=Path, default=None, help="default: beside the weights (.onnx / .pt)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    export.set_defaults(func=cmd_export)

    config = commands.add_parser(
        "config", help="print a resolved config as YAML, every field with its comment",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print the defaults (or a config file or bundled config, with overrides applied) as YAML\n"
                    "with every field's documentation: a starting point for your own.\n\n"
                    "example:\n  noisystudent config > mine.yaml\n  noisystudent config demo student.unlabeled_ratio=7")
    config.add_argument("config", type=Path, nargs="?", default=None,
                        help="YAML file or bundled config name (demo, smoke, imagenet-paper); default: the defaults")
    config.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    config.set_defaults(func=cmd_config)

    models = commands.add_parser(
        "models", help="list model names", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="List the model registry: names for the `models` list, parameters, resolutions, dropout.\n\n"
                    "example:\n  noisystudent models\n"
                    "  noisystudent run configs/demo.yaml models=resnet_small_32,resnet_medium_32 name=larger")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .train import Preempted

    parser = build_parser()
    # argparse ends a `*` positional at the first option, so overrides written after an option
    # (`label T S --config c.yaml labels.top_k=5`) come back unrecognized: they are overrides too.
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "overrides") or any(item.startswith("-") or "=" not in item for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides += extra
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, not at exit: a reader that went away is handled below
        return code
    except BrokenPipeError:  # `noisystudent models | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush writes nowhere
        return 128 + signal.SIGPIPE  # what a shell reports for a command whose reader went away
    except Preempted as stop:
        print(f"noisystudent: {stop}", file=sys.stderr)
        return stop.exit_code
    except UserError as error:
        print(f"noisystudent: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.filename is None:  # not about a path the user gave: a bug, keep the traceback
            raise
        print(f"noisystudent: error: {error.filename}: {error.strerror or error}; check the paths you gave "
              f"(runs_dir and the run folder must be writable folders)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("noisystudent: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
