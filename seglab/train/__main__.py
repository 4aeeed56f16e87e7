"""`python -m seglab.train --config RECIPE --run-dir DIR`: the trainer without the CLI.

This is what the container (and `torchrun -m seglab.train`) runs; `seglab train` is the
same with the `seglab` front end.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DESCRIPTION = """\
Train a resolved recipe (a run directory's recipe.yaml, or `seglab recipe expand
--resolved` output) in a run directory. An existing run directory with
checkpoints/last.pt resumes from it. Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set)
it trains with DistributedDataParallel; train.batch_size is the global batch.

Exit status: 0 finished; 1 failed; 128 + the signal (143 for SIGTERM, 130 for SIGINT)
after a clean stop on that signal (last.pt written, end event "stopped"); 0 for that
too in a Slurm job (SLURM_JOB_ID set).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The trainer's options (shared by `seglab train` and `python -m seglab.train`)."""
    parser.add_argument(
        "--config",
        required=True,
        type=Path,
        metavar="RECIPE.yaml",
        help="resolved recipe (no extends:, no ablate:)",
    )
    parser.add_argument(
        "--run-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="run directory: recipe.yaml, events.jsonl, checkpoints/, tb/",
    )
    parser.add_argument(
        "--data-root",
        default=None,
        metavar="PATH",
        help="dataset directory (default: $SEGLAB_DATA_ROOT; synthetic needs none)",
    )
    parser.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        metavar="N",
        help="start N DDP processes here (one per GPU) through "
        "torch.distributed.run; exits 143 (128 + the signal) after a clean SIGTERM "
        "stop, as one process does",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and train; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m seglab.train",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not args.config.is_file():
        parser.error(f"--config: no such file: {args.config}")
    if args.nproc_per_node < 1:
        parser.error(f"--nproc-per-node: must be at least 1, got {args.nproc_per_node}")
    return train(args)


def train(args: argparse.Namespace) -> int:
    """Train as the parsed options say: here, or as `--nproc-per-node` DDP processes."""
    if args.nproc_per_node > 1 and "RANK" not in os.environ:
        from seglab.train.distributed import launch

        return launch(args.nproc_per_node, trainer_args(args), args.run_dir)
    from seglab.train.loop import run

    return run(args.config, args.run_dir, args.data_root)


def trainer_args(args: argparse.Namespace) -> list[str]:
    """The options each launched process gets (everything but --nproc-per-node)."""
    out = ["--config", str(args.config), "--run-dir", str(args.run_dir)]
    if args.data_root is not None:
        out += ["--data-root", args.data_root]
    return out


if __name__ == "__main__":
    sys.exit(main())
