"""Whole lines of a log file that a run appends to (train.log of processes and Slurm jobs)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from seglab.runtime.base import LogCursor, LogLine

_READ = 65536


def tail_offset(path: Path, lines: int) -> int:
    """Byte offset where the last ``lines`` lines of ``path`` begin (an unterminated last
    line counts as one)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if lines <= 0:
            return size
        pos, data = size, b""
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(_READ, pos)
            pos -= step
            handle.seek(pos)
            data = handle.read(step) + data
        cut = len(data) - 1 if data.endswith(b"\n") else len(data)
        for _ in range(lines):
            cut = data.rfind(b"\n", 0, cut)
            if cut < 0:
                break
        return pos + cut + 1


def read_lines(
    path: Path,
    active: Callable[[], bool],
    *,
    follow: bool,
    since: LogCursor | None,
    tail: int | None,
    poll: float,
) -> Iterator[LogLine]:
    """Whole lines of ``path`` from a cursor (byte offset) or the last ``tail``.

    With ``follow`` it waits for more while ``active()`` says the run goes on. A final line
    without a newline is given only once the run has ended.
    """
    if since is not None:
        offset = since.offset
    elif tail is not None:
        offset = tail_offset(path, tail)
    else:
        offset = 0
    pending = b""
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
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                offset += len(line) + 1
                yield LogLine(line.decode("utf-8", "replace"), LogCursor(offset=offset))
    if pending and not active():
        yield LogLine(pending.decode("utf-8", "replace"), LogCursor(offset=offset + len(pending)))
