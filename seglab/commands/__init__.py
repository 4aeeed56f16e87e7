"""Subcommand groups of the `seglab` CLI; each module exposes `register(subparsers)`."""

from __future__ import annotations

import argparse
from typing import Any

from seglab.errors import SeglabError


class CommandError(SeglabError):
    """A failure of a command's own arguments (printed without a traceback, exit 1)."""


def add_command(
    subparsers: Any, name: str, help_text: str, description: str | None = None
) -> argparse.ArgumentParser:
    """Add one subcommand whose --help shows `description` (default: `help_text`) verbatim."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help_text,
        description=description or help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def print_json(value: Any) -> None:
    """Print `value` as indented JSON (numbers stay numbers, None is null)."""
    import json

    print(json.dumps(value, indent=2, sort_keys=False, allow_nan=False))
