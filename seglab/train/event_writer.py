"""Event output of a training run: `@seglab` lines on stdout plus the run's events.jsonl.

Only rank 0 writes (other ranks hold a writer whose :meth:`EventWriter.emit` does nothing).
Each record is written unbuffered as soon as it is emitted; :meth:`EventWriter.sync` fsyncs
the file (the loop calls it at every eval and checkpoint). `seq` continues across resumes
from the last record already in events.jsonl. When the file cannot be written (disk full,
I/O error) :meth:`EventWriter.emit` raises StorageError once; that record and every later
one still reach stdout (the run's log), and the file is no longer written.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from seglab.events import PREFIX, Event, read_jsonl
from seglab.train.storage import StorageError, guard

EVENTS_FILE = "events.jsonl"


def last_seq(path: Path) -> int:
    """The highest `seq` recorded in events.jsonl at `path`, or -1 when there is none."""
    if not path.is_file():
        return -1
    with path.open(encoding="utf-8") as handle:
        return max((event.seq for event in read_jsonl(handle)), default=-1)


class EventWriter:
    """Writes events for one run directory (a no-op on ranks other than 0)."""

    def __init__(
        self, run_dir: Path, *, enabled: bool = True, stream: TextIO | None = None, min_seq: int = 0
    ) -> None:
        self.enabled = enabled
        self.path = run_dir / EVENTS_FILE
        self._stream = stream if stream is not None else sys.stdout
        self._file: BinaryIO | None = None
        self.seq = -1
        if not enabled:
            return
        self.seq = max(last_seq(self.path), min_seq - 1)
        run_dir.mkdir(parents=True, exist_ok=True)
        needs_newline = self.path.is_file() and _ends_without_newline(self.path)
        with guard(self.path):
            self._file = self.path.open("ab", buffering=0)
        if needs_newline:
            # A SIGKILL mid-write left a torn line: start the next record on a fresh line.
            self._write(self._file, b"\n")

    def emit(self, kind: str, **data: Any) -> Event | None:
        """Write one record (stdout line + events.jsonl line); returns it, None when disabled."""
        if not self.enabled:
            return None
        self.seq += 1
        event = Event(kind=kind, seq=self.seq, time=time.time(), data=data)
        line = event.to_line()
        try:
            if self._file is not None:
                self._write(self._file, (line[len(PREFIX) :] + "\n").encode("utf-8"))
        finally:
            print(line, file=self._stream, flush=True)  # the log has it even when the file not
        return event

    def _write(self, file: BinaryIO, data: bytes) -> None:
        """Write all of ``data``; on a storage failure the file is closed and given up."""
        view = memoryview(data)
        try:
            with guard(self.path):
                while view:  # a raw file may take part of it (a nearly full disk)
                    view = view[file.write(view) :]
        except StorageError:
            file.close()  # unbuffered: nothing is left to flush
            self._file = None
            raise

    def log(self, message: str) -> None:
        """A human-readable progress line on stdout (rank 0 only)."""
        if self.enabled:
            print(message, file=self._stream, flush=True)

    def sync(self) -> None:
        """Fsync events.jsonl."""
        if self._file is not None:
            with guard(self.path):
                os.fsync(self._file.fileno())

    def close(self) -> None:
        """Sync and close the file."""
        if self._file is not None:
            try:
                self.sync()
            finally:
                self._file.close()
                self._file = None


def _ends_without_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"
