"""`python -m seglab.train --config RECIPE --run-dir DIR`: the trainer without the CLI.

This is what the container (and `torchrun -m seglab.train`) runs; `seglab train` is the
same with the `seglab` front end.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

DESCRIPTION = """\
Train a resolved recipe (a run directory's recipe.yaml, or `seglab recipe expand
--resolved` output) in a run directory. An existing run directory with
checkpoints/last.pt resumes from it. Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set)
it trains with DistributedDataParallel; train.batch_size is the global batch.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The trainer's options (shared by `seglab train` and `python -m seglab.train`)."""
    parser.add_argument("--config", required=True, type=Path, metavar="RECIPE.yaml",
                        help="resolved recipe (no extends:, no ablate:)")
    parser.add_argument("--run-dir", required=True, type=Path, metavar="DIR",
                        help="run directory: recipe.yaml, events.jsonl, checkpoints/, tb/")
    parser.add_argument("--data-root", default=None, metavar="PATH",
                        help="dataset directory (default: $SEGLAB_DATA_ROOT; synthetic "
                             "needs none)")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and train; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m seglab.train", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not args.config.is_file():
        parser.error(f"--config: no such file: {args.config}")
    from seglab.train.loop import run

    return run(args.config, args.run_dir, args.data_root)


if __name__ == "__main__":
    sys.exit(main())
