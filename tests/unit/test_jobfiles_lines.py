"""Reading a job's log through a machine in bounded chunks: whole lines, long lines cut
with a marker, a newline-less stream in bounded memory, cursors that resume exactly."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from seglab.machines import LocalMachine, LoopThread, MachineSync
from seglab.runtime.base import LogCursor
from seglab.runtime.jobfiles import JobFiles
from seglab.safetext import MAX_LINE_BYTES


@pytest.fixture
def files() -> Iterator[JobFiles]:
    loop = LoopThread("test-jobfiles")
    try:
        yield JobFiles(MachineSync(LocalMachine("here"), loop))
    finally:
        loop.close()


def _read(files: JobFiles, path: Path, since: LogCursor | None = None) -> list[tuple[str, int]]:
    lines = files._remote_lines(path, lambda: False, follow=False, since=since, tail=None)
    return [(line.text, line.cursor.offset) for line in lines]


def test_lines_long_lines_and_resuming(files: JobFiles, tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    long = b"x" * (3 * MAX_LINE_BYTES + 5)
    log.write_bytes(b"first\n" + long + b"\nlast\nunterminated")
    got = _read(files, log)
    assert got[0] == ("first", 6)
    assert got[1][0] == "x" * MAX_LINE_BYTES + f"… [{2 * MAX_LINE_BYTES + 5} bytes cut]"
    assert got[1][1] == 6 + len(long) + 1  # the cursor counts the whole line
    assert got[2] == ("last", 6 + len(long) + 1 + 5)
    assert got[3] == ("unterminated", log.stat().st_size)
    assert _read(files, log, LogCursor(offset=got[1][1]))[0][0] == "last"


def test_a_newline_less_stream_is_read_in_bounded_memory(files: JobFiles, tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    with log.open("wb") as handle:
        for _ in range(48):
            handle.write(b"\r 42%|####      | 4200/10000" * 40000)  # about 1 MB each
    size = log.stat().st_size
    tracemalloc.start()
    try:
        ((text, offset),) = _read(files, log)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert offset == size and text.endswith(f"… [{size - MAX_LINE_BYTES} bytes cut]")
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB line"
