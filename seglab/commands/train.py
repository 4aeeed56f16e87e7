"""`seglab train` (run the trainer here) and `seglab bench train|data` (trainer benchmarks).

Handlers import :mod:`seglab.train` lazily: the workstation itself never imports torch.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from seglab.commands import add_command, print_json

TRAIN_HELP = """\
Train a resolved recipe in a run directory, in this process (no container).

The run directory receives recipe.yaml, events.jsonl, checkpoints/last.pt and best.pt,
and tb/ (TensorBoard). Progress lines and `@seglab {json}` event lines go to stdout.
Starting again with the same run directory resumes from checkpoints/last.pt. SIGTERM
stops cleanly (last.pt written, exit 0).

Multi-process: --nproc-per-node N starts N DDP processes (one per GPU) through
torch.distributed.run and exits 0 after a clean SIGTERM stop; or run it yourself:
torchrun --nproc_per_node N -m seglab.train --config ... --run-dir ...
(train.batch_size is the global batch, split evenly over the processes).

A recipe file without extends: and ablate: is already resolved; so is the recipe.yaml
of any run directory (one variant of a grid).

Example (about a minute on a laptop CPU):
  seglab train --config recipes/synthetic-smoke.yaml --run-dir runs/smoke
"""

BENCH_HELP = """\
Trainer benchmarks (they need the `train` extra: torch).

  seglab bench train RECIPE   training img/s and peak memory, configured vs fp32 baseline
  seglab bench data           data-loader img/s on Cityscapes-sized PNGs
"""

BENCH_TRAIN_HELP = """\
Measure training throughput (img/s) and peak memory for RECIPE's model as configured
(train.amp, train.channels_last, train.compile) AND for an fp32, NCHW, eager baseline of
the same model, in the same process on random batches; prints both and their ratio.
Uses the GPU when there is one (peak memory: CUDA max allocated), else the CPU (peak
RSS). On a CPU, shrink the problem with --crop and --batch so it finishes quickly.

Example (CPU):
  seglab bench train recipes/cityscapes-deeplabv3plus-r50.yaml --crop 128 256 --batch 2 --steps 3
"""

BENCH_DATA_HELP = """\
Measure the data loader: Cityscapes-sized (1024x2048) image and label PNGs are written
to a temporary directory, then decoded, label-mapped, randomly scaled (0.5-2.0), cropped
(512x1024), flipped and normalised by N worker processes. Prints img/s in total and per
worker (with --workers 0 the main process does the work and counts as one worker).
"""


def register(subparsers: Any) -> None:
    """Add the `train` command and the `bench` group."""
    train = add_command(subparsers, "train", "train a resolved recipe in this process", TRAIN_HELP)
    from seglab.train.__main__ import add_arguments

    add_arguments(train)
    train.set_defaults(func=_train)

    bench = add_command(
        subparsers, "bench", "benchmark training throughput and data loading", BENCH_HELP
    )
    actions = bench.add_subparsers(title="benchmarks", metavar="BENCH", required=True)
    bench_train = add_command(
        actions, "train", "training img/s: configured vs fp32 baseline", BENCH_TRAIN_HELP
    )
    bench_train.add_argument("recipe", type=Path, metavar="RECIPE", help="recipe YAML file")
    bench_train.add_argument(
        "--variant", default=None, help="grid variant (axis=level,...; default: the base recipe)"
    )
    bench_train.add_argument(
        "--steps",
        type=_positive,
        default=20,
        help="timed training steps per configuration (default 20)",
    )
    bench_train.add_argument(
        "--warmup",
        type=_non_negative,
        default=3,
        help="untimed steps first (default 3; compile needs them)",
    )
    bench_train.add_argument(
        "--crop",
        type=_positive,
        nargs=2,
        metavar=("H", "W"),
        help="override data.crop (e.g. 128 256 on a CPU)",
    )
    bench_train.add_argument(
        "--batch", type=_positive, default=None, help="images per step (default: the per-GPU batch)"
    )
    bench_train.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="override train.compile for the configured run (the baseline is always eager)",
    )
    bench_train.add_argument("--json", action="store_true", help="machine-readable output")
    bench_train.set_defaults(func=_bench_train)

    bench_data = add_command(
        actions, "data", "data-loader img/s on Cityscapes-sized PNGs", BENCH_DATA_HELP
    )
    bench_data.add_argument(
        "--workers", type=_non_negative, default=2, help="DataLoader worker processes (default 2)"
    )
    bench_data.add_argument(
        "--images", type=_positive, default=8, help="distinct PNG pairs to generate (default 8)"
    )
    bench_data.add_argument(
        "--samples", type=_positive, default=48, help="samples to time (default 48)"
    )
    bench_data.add_argument("--json", action="store_true", help="machine-readable output")
    bench_data.set_defaults(func=_bench_data)


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _require_torch() -> None:
    from seglab.commands import CommandError

    if importlib.util.find_spec("torch") is None:
        raise CommandError(
            "the trainer needs torch: install the train extra (pip install 'seglab[train]')"
        )


def _train(args: argparse.Namespace) -> int:
    from seglab.commands import CommandError

    _require_torch()
    if not args.config.is_file():
        raise CommandError(f"--config: no such file: {args.config}")
    if args.nproc_per_node < 1:
        raise CommandError(f"--nproc-per-node: must be at least 1, got {args.nproc_per_node}")
    from seglab.train.__main__ import train

    return train(args)


def _bench_recipe(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from seglab.commands import CommandError
    from seglab.recipes import Recipe, load

    if not args.recipe.is_file():
        raise CommandError(f"no such recipe file: {args.recipe}")
    loaded = load(args.recipe)
    recipe = loaded.base if args.variant is None else loaded.variant(args.variant).recipe
    if args.crop or args.compile is not None:
        data = recipe.model_dump(mode="json")
        if args.crop:
            data["data"]["crop"] = list(args.crop)
        if args.compile is not None:
            data["train"]["compile"] = args.compile
        try:
            recipe = Recipe.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise CommandError(f"--crop {' '.join(map(str, args.crop or []))}: {problems}") from exc
    return recipe


def _bench_train(args: argparse.Namespace) -> int:
    _require_torch()
    recipe = _bench_recipe(args)
    from seglab.train.bench import bench_train

    result = bench_train(recipe, steps=args.steps, warmup=args.warmup, batch=args.batch)
    if args.json:
        print_json(result)
        return 0
    print(
        f"{result['recipe']} [{result['variant']}] {result['model']} on "
        f"{result['config']['device']} (torch {result['torch']})"
    )
    for key in ("config", "baseline"):
        row = result[key]
        memory = "n/a" if row["peak_mem_mib"] is None else f"{row['peak_mem_mib']:.0f} MiB"
        print(
            f"  {key:<9} {row['img_per_s']:8.2f} img/s  peak {memory} ({row['memory_kind']})"
            f"  batch {row['batch']} crop {row['crop'][0]}x{row['crop'][1]} amp "
            f"{row['amp']} channels_last {row['channels_last']} compile {row['compile']}"
        )
    ratio = result["memory_ratio"]
    print(
        f"  speedup {result['speedup']:.2f}x, memory ratio "
        f"{'n/a' if ratio is None else format(ratio, '.2f')}"
    )
    return 0


def _bench_data(args: argparse.Namespace) -> int:
    _require_torch()
    from seglab.train.bench import bench_data, format_data_bench

    result = bench_data(args.workers, images=args.images, samples=args.samples)
    if args.json:
        print_json(result)
        return 0
    print(format_data_bench(result))
    return 0
