"""The `seglab` command: no arguments opens the TUI; subcommands run headless.

Each group of subcommands lives in a module of :mod:`seglab.commands` that exposes
``register(subparsers)``; handlers import their heavy dependencies lazily so that
``seglab --help`` stays fast and the workstation never imports torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from seglab import __version__

if TYPE_CHECKING:
    import argparse

# Command modules, in the order their commands appear in `seglab --help`.
COMMAND_MODULES = (
    "seglab.commands.recipe",
    "seglab.commands.hosts",
    "seglab.commands.runs",
    "seglab.commands.access",
    "seglab.commands.gpus",
    "seglab.commands.exporter",
    "seglab.commands.model",
    "seglab.commands.train",
    "seglab.commands.image",
    "seglab.commands.data",
    "seglab.commands.report",
    "seglab.commands.show",
    "seglab.commands.queue",
)

# The module that registers each of the commands scripts call most, so that their parser
# is built from that module alone (the others' imports cost start-up); any other first word
# gets the full parser. tests/unit/test_cli_imports.py checks this against the full parser.
QUICK_COMMANDS = {
    **dict.fromkeys(
        ("run", "ps", "logs", "metrics", "stop", "kill", "resume", "rm"), "seglab.commands.runs"
    ),
    "gpus": "seglab.commands.gpus",
    "data": "seglab.commands.data",
}

DESCRIPTION = """\
seglab: a terminal workstation manager for semantic-segmentation training.

Run with no arguments to open the dashboard. The subcommands below do the same
things headless, for scripts and for terminals without a screen to spare.
"""

EPILOG = """\
Configuration lives in $XDG_CONFIG_HOME/seglab (hosts.yaml), the run registry in
$XDG_STATE_HOME/seglab. `seglab COMMAND --help` explains each command.
"""


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The argument parser with ``modules`` registered (default: every command module)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="seglab",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"seglab {__version__}")
    parser.add_argument(
        "--layout",
        default="default",
        help="dashboard layout: default, compact, wide, or a user layout name",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in modules:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `seglab` console script; returns the exit status."""
    words = sys.argv[1:] if argv is None else list(argv)
    if words == ["--version"]:  # answered before any command module is imported
        print(f"seglab {__version__}")
        return 0
    if not words:  # the dashboard: no command parser needed
        return _open_dashboard("default")
    from seglab.errors import SeglabError
    from seglab.yamlpos import ConfigError

    quick = QUICK_COMMANDS.get(words[0])
    parser = build_parser() if quick is None else build_parser((quick,))
    args = parser.parse_args(words)
    handler = getattr(args, "func", None)
    if handler is None:
        return _open_dashboard(args.layout)
    try:
        return int(handler(args))
    except ConfigError as exc:  # FILE:LINE: key: message lines, printed as they are
        print(exc.describe(), file=sys.stderr)
        return 1
    except SeglabError as exc:
        print(f"seglab: {exc.describe()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _open_dashboard(layout: str) -> int:
    # The workstation and its telemetry start now, in a thread, while Textual is imported
    # and the first frame drawn: the first GPU sample is then on its way.
    early = importlib.import_module("seglab.tui.feeds").EarlyStart()
    tui = importlib.import_module("seglab.tui.app")
    return int(tui.run(layout=layout, early=early))
