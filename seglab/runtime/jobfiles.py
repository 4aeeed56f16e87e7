"""A runs root's files as a Slurm login node sees them, through that node's machine.

The login node is this machine or a host reached over SSH; either way the files are read
and written through its :class:`~seglab.machines.base.MachineSync`, so the Slurm runtime has
one code path for both. Logs of a local runs root are read straight from the file
(:func:`~seglab.runtime.logfile.read_lines`); a remote one's in chunks from a byte offset.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from seglab.machines import CommandResult, MachineSync
from seglab.runtime.base import LogCursor, LogLine
from seglab.runtime.errors import RuntimeFailure
from seglab.runtime.logfile import read_lines
from seglab.safetext import MAX_LINE_BYTES, cut_marker, whole_chars

POLL = 1.0
READ_CHUNK = 1 << 20  # bytes read from a remote log at a time (memory stays bounded)


class JobFiles:
    """Small files, task links and logs under a runs root on ``machine``."""

    def __init__(self, machine: MachineSync) -> None:
        self.machine = machine

    def _sh(self, script: str, *args: str) -> CommandResult:
        return self.machine.run(["sh", "-c", script, "sh", *args])

    def _check(self, result: CommandResult, what: str) -> CommandResult:
        if result.returncode != 0:
            raise RuntimeFailure(f"{what} failed on {self.machine.name}: {result.output}")
        return result

    def write_text(self, path: Path, text: str) -> None:
        """Write a small file (its folder is created)."""
        self.machine.write_text(str(path), text)

    def read_text(self, path: Path) -> str:
        """A small file's text; FileNotFoundError when it is missing."""
        return self.machine.read_text(str(path))

    def exists(self, path: Path) -> bool:
        """Whether ``path`` exists."""
        return self.machine.exists(str(path))

    def unlink(self, path: Path) -> None:
        """Remove a file if it is there."""
        self._check(self.machine.run(["rm", "-f", "--", str(path)]), f"removing {path}")

    def link_tasks(self, folder: Path, run_dirs: Sequence[Path]) -> None:
        """``folder/0`` -> ``run_dirs[0]``, ``folder/1`` -> ... (the folder is created)."""
        script = (
            'f=$1; shift; mkdir -p "$f" && i=0 && for t; do ln -sfn "$t" "$f/$i" '
            "|| exit 1; i=$((i+1)); done"
        )
        self._check(
            self._sh(script, str(folder), *map(str, run_dirs)), f"linking the tasks of {folder}"
        )

    def records(self, root: Path, name: str) -> list[tuple[Path, str]]:
        """``(folder, text)`` of every ``root/*/name`` (one-line files), in one command;
        folders with symbolic links resolved."""
        script = (
            'for f in "$1"/*/"$2"; do [ -f "$f" ] && printf "%s\\t%s\\n" '
            '"$(cd "${f%/*}" && pwd -P)" "$(cat -- "$f")"; done; true'
        )
        result = self._check(self._sh(script, str(root), name), f"listing {root}")
        out = []
        for line in result.stdout.splitlines():
            folder, sep, text = line.partition("\t")
            if sep:
                out.append((Path(folder), text))
        return out

    def lines(
        self,
        path: Path,
        active: Callable[[], bool],
        *,
        follow: bool,
        since: LogCursor | None,
        tail: int | None,
    ) -> Iterator[LogLine]:
        """Whole lines of a log file (see :func:`seglab.runtime.logfile.read_lines`)."""
        if self.machine.is_local:
            yield from read_lines(path, active, follow=follow, since=since, tail=tail, poll=POLL)
        else:
            yield from self._remote_lines(path, active, follow=follow, since=since, tail=tail)

    def _remote_lines(
        self,
        path: Path,
        active: Callable[[], bool],
        *,
        follow: bool,
        since: LogCursor | None,
        tail: int | None,
    ) -> Iterator[LogLine]:
        """Lines read in chunks from a byte offset (the bytes read back are the file's)."""
        if since is not None:
            offset = since.offset
        elif tail is not None:
            sizes = self._check(
                self._sh(
                    'stat -c %s -- "$1" && tail -n "$2" -- "$1" | wc -c', str(path), str(tail)
                ),
                f"reading {path}",
            )
            size, tail_bytes = (int(v) for v in sizes.stdout.split())
            offset = size - tail_bytes
        else:
            offset = 0
        pending = b""
        dropped = 0  # bytes of the current line beyond MAX_LINE_BYTES: counted, not kept
        while True:
            at = offset + len(pending) + dropped
            chunk = self.machine.read_bytes(str(path), at, READ_CHUNK)
            if not chunk:
                ended = not active()
                chunk = self.machine.read_bytes(str(path), at, READ_CHUNK)
                if not chunk:
                    if ended or not follow:
                        break
                    time.sleep(POLL)
                    continue
            if dropped:  # skip to the end of the over-long line
                end = chunk.find(b"\n")
                if end < 0:
                    dropped += len(chunk)
                    continue
                dropped += end
                offset += len(pending) + dropped + 1
                yield LogLine(_cut(pending, dropped), LogCursor(offset=offset))
                pending, dropped, chunk = b"", 0, chunk[end + 1 :]
            pending += chunk
            *whole, pending = pending.split(b"\n")
            for line in whole:
                offset += len(line) + 1
                yield LogLine(_cut(line, 0), LogCursor(offset=offset))
            if len(pending) > MAX_LINE_BYTES:
                dropped, pending = len(pending) - MAX_LINE_BYTES, pending[:MAX_LINE_BYTES]
        if (pending or dropped) and not active():
            end_at = offset + len(pending) + dropped
            yield LogLine(_cut(pending, dropped), LogCursor(offset=end_at))


def _cut(raw: bytes, dropped: int) -> str:
    """A line as text: its first MAX_LINE_BYTES (whole characters) and a marker for the
    bytes cut, counting ``dropped`` bytes already skipped."""
    dropped += max(0, len(raw) - MAX_LINE_BYTES)
    raw = raw[:MAX_LINE_BYTES]
    if not dropped:
        return raw.decode("utf-8", "replace")
    keep = whole_chars(raw)
    return raw[:keep].decode("utf-8", "replace") + cut_marker(dropped + len(raw) - keep)
