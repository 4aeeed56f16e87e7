"""The event-line schema shared by the trainer and the workstation (no torch here).

The trainer prints each record on stdout as one line, ``@seglab {json}``, and appends the
same JSON object to ``events.jsonl`` in the run directory. Every record carries:

- ``v``: schema version (:data:`SCHEMA_VERSION`),
- ``kind``: one of :data:`KINDS`,
- ``seq``: a per-run sequence number, strictly increasing across resumes (the registry
  keys events on ``(run_id, seq)``, so re-ingesting a line never duplicates it),
- ``time``: Unix time in seconds (float).

The fields required per kind are in :data:`REQUIRED`; docs/events.md documents them all.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from seglab.errors import SeglabError

PREFIX = "@seglab "
SCHEMA_VERSION = 1

KINDS = ("start", "train", "eval", "samples", "checkpoint", "end", "error")

REQUIRED: dict[str, tuple[str, ...]] = {
    "start": ("recipe", "variant", "world_size", "class_names", "total_iters"),
    "train": ("iter", "epoch", "loss", "lr"),
    "eval": ("iter", "epoch", "miou", "pixel_acc", "mean_acc", "per_class_iou"),
    "samples": ("iter", "dir", "images"),
    "checkpoint": ("iter", "path"),
    "end": ("status", "best_miou"),
    "error": ("message",),
}

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals the trainer answers with a clean stop (``last.pt``, then ``end(stopped)``)."""


def stop_exit_status(signum: int) -> int:
    """The trainer's exit status after a clean stop on ``signum``: 128 + signum (143 for
    SIGTERM), as if the signal had ended it, so that a Docker ``on-failure`` restart
    policy starts a run again after its engine's shutdown stopped it; the ``end`` event,
    not this status, says that the stop was clean."""
    return 128 + signum


CLEAN_STOP_STATUSES = frozenset({0, *(stop_exit_status(s) for s in STOP_SIGNALS)})
"""Exit statuses of a trainer that stopped cleanly (0: trainers before the 128 + signal
convention)."""


class EventError(SeglabError):
    """A line that carries the prefix but is not a valid event record."""


@dataclass(frozen=True)
class Event:
    """One event record."""

    kind: str
    seq: int
    time: float
    data: dict[str, Any] = field(default_factory=dict)
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as written to the wire and to events.jsonl."""
        return {"v": self.v, "kind": self.kind, "seq": self.seq, "time": self.time, **self.data}

    def to_line(self) -> str:
        """The prefixed stdout line (no trailing newline)."""
        return PREFIX + json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)


def from_dict(obj: Mapping[str, Any]) -> Event:
    """Validate a decoded record and return it as an :class:`Event`."""
    kind = obj.get("kind")
    if kind not in KINDS:
        raise EventError(f"unknown event kind {kind!r}")
    version = obj.get("v")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise EventError(f"unsupported event schema version {version!r}")
    seq = obj.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise EventError(f"event seq must be a non-negative integer, got {seq!r}")
    when = obj.get("time")
    if not isinstance(when, (int, float)) or isinstance(when, bool):
        raise EventError(f"event time must be a number, got {when!r}")
    missing = [key for key in REQUIRED[kind] if key not in obj]
    if missing:
        raise EventError(f"{kind} event lacks {', '.join(missing)}")
    data = {k: v for k, v in obj.items() if k not in {"v", "kind", "seq", "time"}}
    return Event(kind=kind, seq=seq, time=float(when), data=data, v=version)


def parse_line(line: str) -> Event | None:
    """The event on a log line, or None for an ordinary log line.

    The prefix may follow a timestamp or other text the runtime adds in front.
    Raises :class:`EventError` for a prefixed line that is not a valid record.
    """
    at = line.find(PREFIX)
    if at < 0:
        return None
    payload = line[at + len(PREFIX) :].strip()
    try:
        obj = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise EventError(f"event line is not JSON: {exc.msg}") from exc
    if not isinstance(obj, dict):
        raise EventError("event line is not a JSON object")
    return from_dict(obj)


def read_jsonl(lines: Iterable[str]) -> Iterator[Event]:
    """Events from the lines of an events.jsonl file; a torn last line is skipped."""
    for raw in lines:
        text = raw.strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            # Only an interrupted final write can leave a partial line; it carries no
            # committed record, and the next writer starts on a fresh line.
            continue
        yield from_dict(obj)
