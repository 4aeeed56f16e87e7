"""`seglab show RUN`: a run's provenance and summary in one place."""

from __future__ import annotations

import argparse
from typing import Any

from seglab.commands import add_command, print_json


def register(subparsers: Any) -> None:
    """Add the `show` command."""
    parser = add_command(
        subparsers,
        "show",
        "a run's provenance and summary",
        "Show one run's provenance and summary: recipe and its sha, the variant's overrides,\n"
        "image and digest, host and GPUs (with their names), seglab/torch/CUDA versions,\n"
        "start and end, exit status, best evaluation, and where checkpoints and exports are.\n\n"
        "example:\n"
        "  seglab show synthetic-smoke.default.1a2b3c --json",
    )
    parser.add_argument("run_id", metavar="RUN", help="a run id (`seglab ps --all` lists them)")
    parser.add_argument("--json", action="store_true", help="print the documented JSON form")
    parser.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    from seglab.report.show import show_json, show_text
    from seglab.workstation import Workstation
    from seglab.yamlpos import ConfigError

    ws = Workstation()
    run = ws.run_summary(args.run_id, images=False)
    base = None
    try:
        base = ws.load_recipe(run.recipe).base.model_dump(mode="json")
    except ConfigError:  # a recipe file this machine cannot find: no overrides to show
        base = None
    doc = show_json(run, base)
    if args.json:
        print_json(doc)
    else:
        print(show_text(doc))
    return 0
