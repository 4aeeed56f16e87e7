"""The workstation façade: the one object the CLI and the TUI drive.

It owns the host inventory, the registry, telemetry, the scheduler and the runtimes, so
every behaviour the dashboard shows is reachable, and testable, headless.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from seglab import paths, recipes
from seglab.hosts import Inventory, load_inventory
from seglab.registry import Registry
from seglab.yamlpos import ConfigError, Problem, did_you_mean


class Workstation:
    """Entry point to everything seglab manages from this machine."""

    def __init__(self, config_dir: Path | None = None, state_dir: Path | None = None) -> None:
        self.config_dir = config_dir or paths.config_dir()
        self.state_dir = state_dir or paths.state_dir()

    # -- recipes ---------------------------------------------------------------------

    def load_recipe(self, path: str | Path) -> recipes.RecipeFile:
        """Load and expand one recipe (raises ConfigError with every problem).

        `path` is a file, or the name of a shipped recipe (`synthetic-smoke`).
        """
        return recipes.load(self.find_recipe(path))

    def find_recipe(self, path: str | Path) -> Path:
        """A recipe file path: `path` itself if it exists, else a shipped recipe so named."""
        candidate = Path(path)
        if candidate.exists():
            return candidate
        if len(candidate.parts) == 1:
            shipped = paths.shipped("recipes") / f"{candidate.name.removesuffix('.yaml')}.yaml"
            if shipped.is_file():
                return shipped
        names = [p.stem for p in self.shipped_recipes()]
        raise ConfigError([Problem(str(path), 1, "(file)",
                                   "no such recipe file, nor a shipped recipe of that name"
                                   f"{did_you_mean(candidate.stem, names)}; "
                                   "`seglab recipe list` shows the shipped ones")])

    def shipped_recipes(self) -> list[Path]:
        """The example recipes that come with seglab."""
        return sorted(paths.shipped("recipes").glob("*.yaml"))

    def check_recipes(self, files: Iterable[str | Path]) -> Iterator[tuple[str, list[Problem]]]:
        """Each file with its problems (an empty list when it is valid)."""
        for file in files:
            try:
                self.load_recipe(file)
            except ConfigError as exc:
                yield str(file), list(exc.problems)
            else:
                yield str(file), []

    # -- hosts and registry ----------------------------------------------------------

    def hosts(self) -> Inventory:
        """The host inventory from `hosts.yaml` in the config dir (ConfigError if invalid)."""
        return load_inventory(self.config_dir / paths.hosts_file().name)

    _registry: Registry | None = None

    def registry(self) -> Registry:
        """The run registry in the state dir (opened once, shared by this workstation)."""
        if self._registry is None:
            self._registry = Registry(self.state_dir / paths.registry_file().name)
        return self._registry
