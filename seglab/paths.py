"""XDG locations (config, state, runs) and the data shipped with the package."""

from __future__ import annotations

import os
from pathlib import Path

APP = "seglab"


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var, "")
    # The XDG spec says relative paths are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / default


def config_dir() -> Path:
    """`$XDG_CONFIG_HOME/seglab`: hosts.yaml and user layouts."""
    return _xdg("XDG_CONFIG_HOME", ".config") / APP


def state_dir() -> Path:
    """`$XDG_STATE_HOME/seglab`: the run registry."""
    return _xdg("XDG_STATE_HOME", ".local/state") / APP


def data_dir() -> Path:
    """`$XDG_DATA_HOME/seglab`: the parent of the local host's default runs root."""
    return _xdg("XDG_DATA_HOME", ".local/share") / APP


def hosts_file() -> Path:
    """The host inventory, `hosts.yaml` in the config dir."""
    return config_dir() / "hosts.yaml"


def registry_file() -> Path:
    """The SQLite registry in the state dir."""
    return state_dir() / "registry.sqlite3"


def default_runs_root() -> Path:
    """Where the local host keeps run directories unless hosts.yaml says otherwise."""
    return data_dir() / "runs"


def user_layouts_dir() -> Path:
    """User Textual CSS layouts; they override or add to the shipped ones."""
    return config_dir() / "layouts"


def shipped(name: str) -> Path:
    """A folder shipped with seglab: `layouts`, `recipes` or `images`.

    An installed wheel carries them under `seglab/_data/`; a checkout has them at the top.
    """
    package = Path(__file__).resolve().parent
    installed = package / "_data" / name
    if installed.is_dir():
        return installed
    return package.parent / name
