"""YAML loading that remembers the line of every key, and `FILE:LINE: key: message` errors."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seglab.errors import ConfigurationError

KeyPath = tuple[str | int, ...]


def dotted(path: KeyPath) -> str:
    """`('train', 'optimizer', 'lr')` as `train.optimizer.lr`; list indices as `[i]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


@dataclass(frozen=True)
class Problem:
    """One error in a configuration file."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


class ConfigError(ConfigurationError):
    """Every problem found in one or more configuration files, reported together."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(set(problems), key=lambda p: (p.file, p.line, p.key, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class Located:
    """A YAML document as plain Python data plus the line (1-based) of each key path."""

    file: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get((), 1)

    def problem(self, path: KeyPath, message: str) -> Problem:
        """A :class:`Problem` located at `path` in this file."""
        return Problem(self.file, self.line_of(path), dotted(path), message)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.1 wants `1.0e-4`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)

_constructor = _Loader("")  # an instance only for its scalar constructor


def _build(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], file: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise ConfigError(
                    [
                        Problem(
                            file,
                            key_node.start_mark.line + 1,
                            dotted(path),
                            f"keys must be strings, got {key!r}",
                        )
                    ]
                )
            child = (*path, key)
            if key in out:
                raise ConfigError(
                    [
                        Problem(
                            file, key_node.start_mark.line + 1, dotted(child), "key appears twice"
                        )
                    ]
                )
            lines[child] = key_node.start_mark.line + 1
            out[key] = _build(value_node, child, lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), lines, file) for i, item in enumerate(node.value)]
    return _constructor.construct_object(node, deep=True)


def load_text(text: str, file: str) -> Located:
    """Parse YAML text; a syntax error becomes a located :class:`ConfigError`."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([Problem(file, line, "(syntax)", str(exc.problem or exc))]) from exc
    lines: dict[KeyPath, int] = {}
    if node is None:
        return Located(file, {}, {(): 1})
    return Located(file, _build(node, (), lines, file), lines)


def load_file(path: Path) -> Located:
    """Read and parse a YAML file (a missing or unreadable file is a ConfigError)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(path), 1, "(file)", exc.strerror or str(exc))]) from exc
    return load_text(text, str(path))



