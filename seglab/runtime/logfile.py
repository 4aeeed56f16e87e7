"""Whole lines of a log file that a run appends to (train.log of processes and Slurm jobs).

Memory stays bounded whatever the run writes: a line is held up to
:data:`~seglab.safetext.MAX_LINE_BYTES`; the rest of it is counted, not kept, and the line
is given with a :func:`~seglab.safetext.cut_marker`. ``tail`` reads backwards from the
end in fixed blocks, so finding the last lines costs one pass over them, never more.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from seglab.runtime.base import LogCursor, LogLine
from seglab.safetext import MAX_LINE_BYTES, cut_marker, whole_chars

_READ = 65536


def tail_offset(path: Path, lines: int) -> int:
    """Byte offset where the last ``lines`` lines of ``path`` begin (an unterminated last
    line counts as one)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if lines <= 0 or size == 0:
            return size
        handle.seek(size - 1)
        pos = size - 1 if handle.read(1) == b"\n" else size  # the last line's own newline
        wanted = lines
        while pos > 0:
            step = min(_READ, pos)
            pos -= step
            handle.seek(pos)
            block = handle.read(step)
            found = block.count(b"\n")
            if found < wanted:
                wanted -= found
                continue
            cut = len(block)
            for _ in range(wanted):
                cut = block.rfind(b"\n", 0, cut)
            return pos + cut + 1
        return 0


class _Line:
    """The line being read: its first ``limit`` bytes kept, the rest only counted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.kept = 0
        self.dropped = 0

    def add(self, data: bytes) -> None:
        room = self.limit - self.kept
        if room > 0:
            self.parts.append(data[:room])
            self.kept += min(room, len(data))
        self.dropped += max(0, len(data) - room)

    def size(self) -> int:
        return self.kept + self.dropped

    def take(self) -> str:
        """The line as text (cut with a marker when it was too long); starts a new one."""
        raw = b"".join(self.parts)
        dropped = self.dropped
        if dropped:
            keep = whole_chars(raw)
            raw, dropped = raw[:keep], dropped + len(raw) - keep
        self.parts, self.kept, self.dropped = [], 0, 0
        text = raw.decode("utf-8", "replace")
        return text + cut_marker(dropped) if dropped else text


def _cut(raw: bytes, limit: int) -> str:
    """A whole line longer than ``limit`` bytes, cut with a marker."""
    keep = whole_chars(raw[:limit])
    return raw[:keep].decode("utf-8", "replace") + cut_marker(len(raw) - keep)


def read_lines(
    path: Path,
    active: Callable[[], bool],
    *,
    follow: bool,
    since: LogCursor | None,
    tail: int | None,
    poll: float,
    limit: int = MAX_LINE_BYTES,
) -> Iterator[LogLine]:
    """Whole lines of ``path`` from a cursor (byte offset) or the last ``tail``.

    With ``follow`` it waits for more while ``active()`` says the run goes on. A final line
    without a newline is given only once the run has ended. A line longer than ``limit``
    bytes is given cut there, with a marker saying how many bytes were left out.
    """
    if since is not None:
        offset = since.offset
    elif tail is not None:
        offset = tail_offset(path, tail)
    else:
        offset = 0
    line = _Line(limit)
    with open(path, "rb") as handle:
        handle.seek(offset)
        while True:
            chunk = handle.read(_READ)
            if not chunk:
                ended = not active()
                chunk = handle.read(_READ)  # what was written before the check
                if not chunk:
                    if ended or not follow:
                        break
                    time.sleep(poll)
                    continue
            pieces = chunk.split(b"\n")
            line.add(pieces[0])
            if len(pieces) == 1:
                continue  # still inside one line
            offset += line.size() + 1
            yield LogLine(line.take(), LogCursor(offset=offset))
            for raw in pieces[1:-1]:
                offset += len(raw) + 1
                text = raw.decode("utf-8", "replace") if len(raw) <= limit else _cut(raw, limit)
                yield LogLine(text, LogCursor(offset=offset))
            line.add(pieces[-1])  # the start of the next line (or nothing)
    if line.size() and not active():
        offset += line.size()
        yield LogLine(line.take(), LogCursor(offset=offset))
