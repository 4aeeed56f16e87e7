"""The workstation façade: the one object the CLI and the TUI drive.

It owns the host inventory, the registry, telemetry, the scheduler and the runtimes, so
every behaviour the dashboard shows is reachable, and testable, headless.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from seglab import paths, recipes
from seglab.yamlpos import ConfigError, Problem


class Workstation:
    """Entry point to everything seglab manages from this machine."""

    def __init__(self, config_dir: Path | None = None, state_dir: Path | None = None) -> None:
        self.config_dir = config_dir or paths.config_dir()
        self.state_dir = state_dir or paths.state_dir()

    # -- recipes ---------------------------------------------------------------------

    def load_recipe(self, path: str | Path) -> recipes.RecipeFile:
        """Load and expand one recipe file (raises ConfigError with every problem)."""
        return recipes.load(path)

    def check_recipes(self, files: Iterable[str | Path]) -> Iterator[tuple[str, list[Problem]]]:
        """Each file with its problems (an empty list when it is valid)."""
        for file in files:
            try:
                recipes.load(file)
            except ConfigError as exc:
                yield str(file), list(exc.problems)
            else:
                yield str(file), []
