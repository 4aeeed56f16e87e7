"""YAML loading that remembers the line of every key, and `FILE:LINE: key: message` errors.

Every configuration file (recipes, hosts.yaml) is read here, within fixed bounds: at most
:data:`MAX_BYTES` of text, :data:`MAX_NODES` values once aliases are expanded and
:data:`MAX_DEPTH` levels of nesting. A document past any of them is refused with a located
``FILE:LINE: (yaml): ...`` error before it is expanded. :func:`validation_problems` turns a
pydantic ``ValidationError`` into located problems, so that every schema reports alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from seglab.errors import ConfigurationError, did_you_mean

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

    def where(self, path: KeyPath) -> tuple[str, int]:
        """This file and the line of `path` (see :meth:`line_of`)."""
        return self.file, self.line_of(path)

    def problem(self, path: KeyPath, message: str) -> Problem:
        """A :class:`Problem` located at `path` in this file."""
        return Problem(self.file, self.line_of(path), dotted(path), message)


# -- pydantic errors, located ----------------------------------------------------------------


def submodel(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The model class of field `key` of `model` (also inside `X | None`), else None."""
    info = model.model_fields.get(key)
    if info is None:
        return None
    annotation = info.annotation
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def validation_problems(
    exc: ValidationError,
    model: type[BaseModel],
    locate: Callable[[KeyPath], tuple[str, int]],
    *,
    at: KeyPath = (),
    label: str = "",
) -> list[Problem]:
    """Each error of `exc` (raised validating `model` at key path `at`) as a :class:`Problem`.

    `locate` gives the file and line of a full key path. Unknown keys get a did-you-mean
    from the model's fields; a validator's message may name a sub-key first
    (``"crop: must be positive"``) to be located there. `label` prefixes every key.
    """
    problems = []
    for err in exc.errors():
        loc: KeyPath = tuple(p for p in err["loc"] if isinstance(p, (str, int)) and p != "[key]")
        kind = err["type"]
        if kind == "extra_forbidden":
            owner: type[BaseModel] | None = model
            for part in loc[:-1]:
                owner = submodel(owner, str(part)) if owner is not None else None
            names = list(owner.model_fields) if owner is not None else []
            message = f"unknown key{did_you_mean(str(loc[-1]), names)}"
        elif kind == "value_error":
            message = str(err["msg"]).removeprefix("Value error, ")
            head, sep, rest = message.partition(": ")
            if sep and re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", head):
                loc = (*loc, *head.split("."))
                message = rest
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "literal_error":
            message = f"{err['msg'].lower()}, got {err.get('input')!r}"
        else:
            message = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {err.get('input')!r}"
        file, line = locate((*at, *loc))
        problems.append(Problem(file, line, label + dotted((*at, *loc)), message))
    return problems


# -- bounded loading ------------------------------------------------------------------------

MAX_BYTES = 1 << 20
"""The largest configuration file read (1 MiB); seglab's own files are a few KiB."""
MAX_NODES = 50_000
"""The most YAML nodes a document may hold once every alias is expanded."""
MAX_DEPTH = 64
"""The deepest nesting of mappings and sequences."""


def _limit(file: str, line: int, message: str) -> ConfigError:
    return ConfigError([Problem(file, line, "(yaml)", message)])


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-4` as a float and refuses alias bombs and deep nesting.

    Composing keeps aliases as shared nodes; it is building the plain data that expands
    them. So the composer counts, for every node, how many nodes it stands for once
    expanded, and refuses the document at the alias that takes the total over
    :data:`MAX_NODES` (an alias to a node that contains it never ends and is refused too).
    """

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self.file = file
        self.expanded = 0
        self.depth = 0
        self.sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self._next_event()
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self.sizes.get(id(target))
                if size is None:
                    raise _limit(self.file, line, f"alias *{event.anchor} refers to itself")
                self._count(size, line)
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _limit(self.file, line, f"nested deeper than {MAX_DEPTH} levels")
        self._count(1, line)
        node = super().compose_node(parent, index)
        self.depth -= 1
        if node is not None:
            children = _children(node)
            self.sizes[id(node)] = 1 + sum(self.sizes.get(id(child), 0) for child in children)
        return node

    def _next_event(self) -> yaml.Event:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        return event

    def _count(self, nodes: int, line: int) -> None:
        self.expanded += nodes
        if self.expanded > MAX_NODES:
            raise _limit(
                self.file,
                line,
                f"more than {MAX_NODES} values once aliases are expanded "
                "(an alias bomb?); write the values out or use fewer aliases",
            )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)

_constructor = _Loader("", "")  # an instance only for its scalar constructor
_MERGE = "tag:yaml.org,2002:merge"


def _build(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], file: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                raise ConfigError(
                    [
                        Problem(
                            file,
                            key_node.start_mark.line + 1,
                            dotted(path),
                            "merge keys (<<) are not supported; write the keys out",
                        )
                    ]
                )
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
    """Parse YAML text within the bounds above; any failure is a located :class:`ConfigError`."""
    if len(text) > MAX_BYTES:
        raise _too_large(file, text.count("\n", 0, MAX_BYTES) + 1)
    loader = _Loader(text, file)
    lines: dict[KeyPath, int] = {}
    try:
        node = loader.get_single_node()
        data = {} if node is None else _build(node, (), lines, file)
    except yaml.MarkedYAMLError as exc:  # syntax, or a tag or value SafeLoader refuses
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([Problem(file, line, "(syntax)", str(exc.problem or exc))]) from exc
    finally:
        loader.dispose()
    return Located(file, data, lines or {(): 1})


def load_file(path: Path) -> Located:
    """Read and parse a YAML file (missing, unreadable, too large or not UTF-8: a ConfigError).

    At most :data:`MAX_BYTES` + 1 bytes are read, however large the file.
    """
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(str(path), 1, "(file)", exc.strerror or str(exc))]) from exc
    if len(raw) > MAX_BYTES:
        raise _too_large(str(path), raw.count(b"\n", 0, MAX_BYTES) + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([Problem(str(path), line, "(file)", "not UTF-8 text")]) from exc
    return load_text(text, str(path))


def _too_large(file: str, line: int) -> ConfigError:
    return ConfigError(
        [Problem(file, line, "(yaml)", f"larger than {MAX_BYTES >> 20} MiB, the most read")]
    )
