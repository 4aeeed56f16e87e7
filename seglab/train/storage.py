"""Storage failures of a run's writes (disk full, quota, I/O error) in plain words.

A write that fails with ENOSPC, EDQUOT or EIO is reported as one line naming the device
(the mount's source, and where it is mounted) and the path being written, e.g.
``no space left on /dev/sdb1 (mounted at /data) at /data/runs/r1/checkpoints/last.pt``,
instead of the library message it surfaced as (torch's ``enforce fail at
inline_container.cc ... unexpected pos``, a TensorBoard thread's bare ``[Errno 28]``).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
FAILURES = {
    errno.ENOSPC: "no space left on",
    errno.EDQUOT: "disk quota exceeded on",
    errno.EIO: "input/output error on",
}
"""The errnos that mean the storage under the run failed, and how they are said."""


class StorageError(RuntimeError):
    """A write of the run failed because of its storage (the message names device and path)."""


def mount_of(path: Path, mountinfo: Path = MOUNTINFO) -> tuple[str, str] | None:
    """(source, mount point) of the mount holding ``path``; None when it cannot be told."""
    target = Path(os.path.realpath(path))
    best: tuple[str, str] | None = None
    try:
        lines = mountinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "-" not in fields or len(fields) < 5:
            continue
        after = fields[fields.index("-") + 1 :]
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        if len(after) < 2 or not target.is_relative_to(point):
            continue
        if best is None or len(point) >= len(best[1]):
            best = (after[1], point)  # the last match of a stacked mount point wins
    return best


def describe(code: int | None, path: Path) -> str:
    """``no space left on DEVICE (mounted at M) at PATH`` for a storage errno."""
    what = FAILURES.get(code or 0, "storage failure on")
    mount = mount_of(path)
    device = "the device" if mount is None else f"{mount[0]} (mounted at {mount[1]})"
    return f"{what} {device} at {path}"


def _cause(exc: BaseException) -> StorageError | OSError | None:
    """A StorageError, or an OSError with a storage errno, among ``exc``, its causes and
    contexts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageError):
            return current
        if isinstance(current, OSError) and current.errno in FAILURES:
            return current
        current = current.__cause__ or current.__context__
    return None


def failure_of(exc: BaseException, path: Path) -> StorageError | None:
    """The StorageError behind ``exc``; ``path`` is named when the OSError names no file."""
    found = _cause(exc)
    if found is None or isinstance(found, StorageError):
        return found
    named = Path(os.fsdecode(found.filename)) if found.filename else path
    return StorageError(describe(found.errno, named))


@contextlib.contextmanager
def guard(path: Path, note: str = "") -> Iterator[None]:
    """Turn a storage failure while writing ``path`` into a StorageError naming the device
    and ``path`` (``note`` is appended); other errors pass unchanged."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        found = _cause(exc)
        if found is None or isinstance(found, StorageError):
            raise
        raise StorageError(describe(found.errno, path) + note) from exc
