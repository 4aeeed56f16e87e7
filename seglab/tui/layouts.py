"""Dashboard layouts: Textual CSS files shipped in ``layouts/`` or in the user's config dir.

A user layout (``$XDG_CONFIG_HOME/seglab/layouts/NAME.tcss``) overrides a shipped one of
the same name or adds a new name.
"""

from __future__ import annotations

from pathlib import Path

from seglab import paths
from seglab.errors import ConfigurationError


class LayoutError(ConfigurationError):
    """An unknown layout name (the message lists the available ones)."""


def available_layouts() -> dict[str, Path]:
    """Every layout name with the file that defines it (user files win)."""
    found: dict[str, Path] = {}
    for folder in (paths.shipped("layouts"), paths.user_layouts_dir()):
        if folder.is_dir():
            for file in sorted(folder.glob("*.tcss")):
                found[file.stem] = file
    return found


def resolve_layout(name: str) -> Path:
    """The .tcss file of layout ``name``; LayoutError names the available layouts."""
    layouts = available_layouts()
    if name in layouts:
        return layouts[name]
    listing = ", ".join(sorted(layouts)) or "none found"
    raise LayoutError(
        f"no layout {name!r}; available: {listing} "
        f"(user layouts go in {paths.user_layouts_dir()}/NAME.tcss)"
    )
