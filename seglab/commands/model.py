"""`seglab eval`, `seglab export` and `seglab model summary`: the trainer's offline tools.

They need the `train` extra (torch); handlers import :mod:`seglab.train` lazily so that the
rest of the CLI works without it.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from seglab.commands import add_command, print_json

_TRAIN_EXTRA = "this command needs the trainer (torch): pip install 'seglab[train]'"


def _train_module(name: str) -> ModuleType:
    """Import ``seglab.train.<name>``, turning a missing torch into a clear message."""
    from seglab.commands import CommandError

    try:
        return importlib.import_module(f"seglab.train.{name}")
    except ModuleNotFoundError as exc:
        if exc.name in {"torch", "torchvision", "numpy", "PIL", "onnxruntime", "onnx"}:
            raise CommandError(f"{_TRAIN_EXTRA} (missing module {exc.name})") from exc
        raise


def register(subparsers: Any) -> None:
    """Add the `eval`, `export` and `model` commands."""
    _register_eval(subparsers)
    _register_export(subparsers)
    _register_model(subparsers)


def _register_eval(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "eval",
        "score prediction PNGs against ground truth (Cityscapes benchmark rules)",
        "Score segmentation predictions against ground truth, the way the official\n"
        "Cityscapes benchmark does (cityscapesscripts' evalPixelLevelSemanticLabeling).\n\n"
        "GT_DIR holds the Cityscapes layout, GT_DIR/<city>/*_gtFine_labelIds.png (searched\n"
        "recursively). PRED_DIR holds one single-channel PNG per ground-truth frame with RAW\n"
        "label ids (7 road, 8 sidewalk, ... 33 bicycle; not train ids), named\n"
        "<city>_<seq>_<frame>*.png anywhere below it.\n\n"
        "Prints per-class IoU and accuracy, mIoU (mean over classes present in ground truth\n"
        "or prediction), pixel accuracy and mean accuracy. docs/metrics.md defines them.\n\n"
        "example:\n"
        "  seglab eval --dataset cityscapes --gt cityscapes/gtFine/val --pred out/val --json",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        choices=["cityscapes"],
        help="label convention of the files (only cityscapes for now)",
    )
    parser.add_argument(
        "--gt",
        required=True,
        type=Path,
        metavar="GT_DIR",
        help="ground-truth folder (Cityscapes gtFine layout)",
    )
    parser.add_argument(
        "--pred",
        required=True,
        type=Path,
        metavar="PRED_DIR",
        help="folder of prediction PNGs with raw label ids",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output (fractions 0-1, null for absent classes)",
    )
    parser.set_defaults(func=_eval)


def _register_export(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "export",
        "export a run's model as TorchScript, ONNX or a Triton model repository",
        "Export the model of a run directory (its recipe.yaml and a checkpoint) to\n"
        "RUN_DIR/export/:\n"
        "  torchscript  model.torchscript.pt (traced)\n"
        "  onnx         model.onnx (opset 18, dynamic batch axis)\n"
        "  triton       triton/<run name>/config.pbtxt and triton/<run name>/1/model.onnx\n\n"
        "The exported model takes a normalised N x 3 x H x W float32 image batch and returns\n"
        "N x classes x H x W logits. Each export is run on a random input and compared with\n"
        "the PyTorch model (ONNX through onnxruntime); the max abs difference is printed and\n"
        "a difference above --tolerance fails the command. export/manifest.json records\n"
        "every export.\n\n"
        "example:\n"
        "  seglab export runs/cityscapes.default.1a2b3c --format onnx --checkpoint best",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run directory")
    parser.add_argument(
        "--format", required=True, choices=["torchscript", "onnx", "triton"], help="what to write"
    )
    parser.add_argument(
        "--checkpoint",
        default="last",
        choices=["last", "best"],
        help="checkpoints/last.pt (default) or checkpoints/best.pt",
    )
    parser.add_argument(
        "--size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="input height and width of the exported graph (default: the recipe's data.crop)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="largest accepted max abs difference to PyTorch (default 1e-3)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_export)


def _register_model(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "model",
        "inspect network configurations",
        "Inspect the networks seglab trains (DeepLabV3 and DeepLabV3+ on ResNets).",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    summary = add_command(
        actions,
        "summary",
        "parameter count and compute of a model",
        "Print the parameter count and the compute (GMACs and GFLOPs) of one forward pass,\n"
        "either for every variant of a RECIPE (at its data.crop) or for a model given by\n"
        "flags (at --crop, default 520 x 520). GMACs count multiply-adds, the convention of\n"
        "torchvision's published 'GFLOPS'; GFLOPs = 2 x GMACs. Counted with\n"
        "torch.utils.flop_counter (convolutions and matrix products).\n\n"
        "examples:\n"
        "  seglab model summary recipes/cityscapes-deeplabv3plus-r50-resolution.yaml\n"
        "  seglab model summary --arch deeplabv3 --backbone resnet50 --num-classes 21 \\\n"
        "      --aux-loss --output-stride 8 --crop 520 520    # torchvision's deeplabv3_resnet50",
    )
    summary.add_argument(
        "recipe",
        nargs="?",
        type=Path,
        metavar="RECIPE",
        help="recipe YAML file (instead of the model flags)",
    )
    summary.add_argument("--variant", help="only this variant of the recipe's grid")
    summary.add_argument("--arch", choices=["deeplabv3", "deeplabv3plus"], help="network")
    summary.add_argument(
        "--backbone",
        choices=["resnet18", "resnet34", "resnet50", "resnet101"],
        help="ResNet backbone",
    )
    summary.add_argument("--num-classes", type=int, metavar="N", help="classes predicted")
    summary.add_argument(
        "--aux-loss", action="store_true", help="include the auxiliary FCN head on layer3"
    )
    summary.add_argument(
        "--output-stride",
        type=int,
        choices=[8, 16],
        default=16,
        help="backbone output stride (default 16, as in recipes; torchvision's deeplabv3 uses 8)",
    )
    summary.add_argument(
        "--crop",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="input size for the compute count (default 520 520)",
    )
    summary.add_argument("--json", action="store_true", help="machine-readable output")
    summary.set_defaults(func=_summary)


def _eval(args: argparse.Namespace) -> int:
    from seglab.commands import CommandError

    evaluate = _train_module("evaluate")
    try:
        result = evaluate.evaluate_cityscapes(args.gt, args.pred)
    except evaluate.EvalInputError as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print_json(result.to_json())
    else:
        print(evaluate.format_result(result))
    return 0


def _export(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from seglab.commands import CommandError

    export = _train_module("export")
    models = _train_module("models")
    size = tuple(args.size) if args.size else None
    try:
        result = export.export_run(args.run_dir, args.format, args.checkpoint, size, args.tolerance)
    except (export.ExportError, models.PretrainedWeightsError) as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print_json(asdict(result))
    else:
        shape = "x".join(str(v) for v in result.input_shape)
        print(f"{result.format}: {result.path}")
        print(
            f"  from {result.checkpoint} (iteration {result.iteration}), checked on a "
            f"{shape} input: max abs diff {result.max_abs_diff:.3g} vs PyTorch"
        )
    return 0


def _summary_targets(args: argparse.Namespace) -> list[tuple[str, Any, int, tuple[int, int]]]:
    """(title, ModelConfig, classes, size) for each model the arguments name."""
    from seglab.commands import CommandError
    from seglab.recipes import ModelConfig, load

    labels = _train_module("labels")
    flags = [
        f"--{name.replace('_', '-')}"
        for name in ("arch", "backbone", "num_classes")
        if getattr(args, name) is not None
    ]
    if args.recipe is not None:
        if flags or args.aux_loss or args.crop:
            raise CommandError("give either a RECIPE or the model flags, not both")
        recipe_file = load(args.recipe)
        variants = recipe_file.variants
        if args.variant is not None:
            variants = [recipe_file.variant(args.variant)]
        return [
            (
                f"{recipe_file.name} [{v.name}]",
                v.recipe.model,
                labels.num_classes(v.recipe.data),
                (v.recipe.data.crop[0], v.recipe.data.crop[1]),
            )
            for v in variants
        ]
    if args.variant is not None:
        raise CommandError("--variant needs a RECIPE")
    missing = [f for f in ("--arch", "--backbone", "--num-classes") if f not in flags]
    if missing:
        raise CommandError(f"give a RECIPE, or the model flags; missing {', '.join(missing)}")
    if args.num_classes < 1:
        raise CommandError(f"--num-classes must be at least 1, got {args.num_classes}")
    cfg = ModelConfig(
        arch=args.arch,
        backbone=args.backbone,
        output_stride=args.output_stride,
        aux_loss=args.aux_loss,
    )
    size = (args.crop[0], args.crop[1]) if args.crop else (520, 520)
    if min(size) < 1:
        raise CommandError(f"--crop must be positive, got {size[0]} {size[1]}")
    return [(f"{args.arch} {args.backbone}", cfg, args.num_classes, size)]


def _summary(args: argparse.Namespace) -> int:
    summary = _train_module("summary")
    rows = []
    measured: dict[tuple[Any, int, tuple[int, int]], Any] = {}
    for title, cfg, classes, size in _summary_targets(args):
        key = (cfg, classes, size)
        if key not in measured:  # grid cells that share a model are measured once
            measured[key] = summary.summarize(cfg, classes, size)
        rows.append((title, measured[key]))
    if args.json:
        print_json({"models": [{"name": title, **result.to_json()} for title, result in rows]})
    else:
        print("\n".join(summary.format_summary(result, title) for title, result in rows))
    return 0
