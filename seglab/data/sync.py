"""`seglab data sync`: copy a dataset tree between machines, sending only what differs.

1. Both sides list themselves (:meth:`Tree.manifest`: path, size, mtime; in this process
   for the workstation, over the host's SFTP channel for a remote host).
2. A file is sent when the target lacks it or its size differs; when only the mtime
   differs both sides hash it, and equal contents get the source's mtime instead of a copy.
3. Each file is written to ``.NAME.SIZE-MTIME.seglab-part`` beside its final name, in
   chunks of :data:`CHUNK` bytes (each one a pipelined SFTP write), then renamed over the
   final name. A partial file left by an interrupted sync of the same source version is
   resumed from its last complete chunk; partial files of other versions are deleted.
4. Afterwards the target lists itself again: every source file must be there with the
   same size and mtime (SSH's MAC already protects the bytes in transit); with
   ``checksum`` both sides also hash the files sent. Any difference is an error.

Nothing on the target is deleted unless ``delete`` is set. Remote-to-remote copies stream
through this process (read from one host's SFTP channel, written to the other's): the
hosts need not reach each other, and no credentials are handed to either.
"""

from __future__ import annotations

import asyncio
import posixpath
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from seglab.data.probe import PART_SUFFIX
from seglab.data.trees import Entry, Manifest, Tree
from seglab.errors import SeglabError

CHUNK = 8 << 20
"""Bytes per write (asyncssh splits it into pipelined requests); resumes restart a chunk."""
PARALLEL_FILES = 16


class SyncError(SeglabError):
    """A sync that could not start or whose result does not match its source."""


def part_name(entry: Entry) -> str:
    """The partial file of ``entry``'s version, beside it."""
    folder, name = posixpath.split(entry.path)
    return posixpath.join(folder, f".{name}.{entry.size}-{entry.mtime}{PART_SUFFIX}")


@dataclass
class Plan:
    """What a sync will do: files to send (with the offset to resume from), to retouch, to
    delete, and partial files to discard."""

    send: list[tuple[Entry, int]] = field(default_factory=list)
    touch: list[Entry] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    stale_parts: list[str] = field(default_factory=list)
    same: int = 0

    @property
    def bytes_to_send(self) -> int:
        """Bytes still to write."""
        return sum(entry.size - offset for entry, offset in self.send)


@dataclass
class SyncReport:
    """What a sync did."""

    source: str
    target: str
    files: int = 0
    same: int = 0
    sent: int = 0
    resumed: int = 0
    retouched: int = 0
    deleted: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    verified: bool = False

    def to_dict(self) -> dict[str, object]:
        """The JSON form (``--json``)."""
        return dict(self.__dict__)


Progress = Callable[[int, int, int, int], None]
"""Called with (bytes done, bytes total, files done, files total)."""


async def plan(source: Tree, target: Tree, delete: bool = False) -> tuple[Manifest, Manifest, Plan]:
    """The source's and the target's manifests and what to do to make the target match."""
    have, want = await asyncio.gather(target.manifest(), source.manifest())
    if not want.present:
        raise SyncError(f"{source} does not exist")
    result = Plan()
    unsure: list[Entry] = []
    for path, entry in want.files.items():
        there = have.files.get(path)
        if there is None or there.size != entry.size:
            part = have.parts.get(part_name(entry))
            offset = ((part.size - 1) // CHUNK) * CHUNK if part and part.size else 0
            result.send.append((entry, max(0, min(offset, entry.size))))
        elif there.mtime != entry.mtime:
            unsure.append(entry)
        else:
            result.same += 1
    if unsure:
        paths = [e.path for e in unsure]
        mine, theirs = await asyncio.gather(source.hashes(paths), target.hashes(paths))
        for entry in unsure:
            if mine[entry.path] == theirs[entry.path]:
                result.touch.append(entry)
            else:
                result.send.append((entry, 0))
    wanted_parts = {part_name(entry) for entry, offset in result.send if offset}
    result.stale_parts = sorted(set(have.parts) - wanted_parts)
    if delete:
        result.delete = sorted(set(have.files) - set(want.files))
    return want, have, result


async def _copy(
    source: Tree, target: Tree, entry: Entry, offset: int, done: Callable[[int], None]
) -> None:
    part = part_name(entry)
    if entry.size == 0:
        await target.write(part, 0, b"")
    while offset < entry.size:
        size = min(CHUNK, entry.size - offset)
        data = await source.read(entry.path, offset, size)
        if len(data) != size:
            raise SyncError(f"{source}/{entry.path} changed while it was copied; sync again")
        await target.write(part, offset, data)
        offset += size
        done(size)
    await target.land(part, entry.path, entry.mtime)


async def sync(
    source: Tree,
    target: Tree,
    *,
    delete: bool = False,
    checksum: bool = False,
    progress: Progress | None = None,
) -> SyncReport:
    """Make ``target`` hold ``source``'s files (see the module doc); what was done.

    With ``checksum``, the files sent are also hashed on both sides afterwards."""
    if source.machine.name == target.machine.name and source.root == target.root:
        raise SyncError(f"{source} is both the source and the target")
    start = time.monotonic()
    report = SyncReport(str(source), str(target))
    try:
        want, have, todo = await plan(source, target, delete)
        total = todo.bytes_to_send
        free = have.free
        if total > free:
            raise SyncError(
                f"{target}: {total / 1e9:.2f} GB to copy but {free / 1e9:.2f} GB free",
                hint="free space on the target, or choose another path",
            )
        report.files, report.same = len(want.files), todo.same
        for stale in todo.stale_parts:
            await target.remove(stale)
        state = {"bytes": 0, "files": 0}

        def done(size: int) -> None:
            state["bytes"] += size
            if progress is not None:
                progress(state["bytes"], total, state["files"], len(todo.send))

        slots = asyncio.Semaphore(PARALLEL_FILES)

        async def one(entry: Entry, offset: int) -> None:
            async with slots:
                await _copy(source, target, entry, offset, done)
                state["files"] += 1
                done(0)

        # Largest first keeps the tail short; each file is independent.
        order = sorted(todo.send, key=lambda item: -item[0].size)
        await _all(one(entry, offset) for entry, offset in order)
        for entry in todo.touch:
            await target.touch(entry.path, entry.mtime)
        for path in todo.delete:
            await target.remove(path)
        report.sent, report.bytes_sent = len(todo.send), total
        report.resumed = sum(1 for _, offset in todo.send if offset)
        report.retouched, report.deleted = len(todo.touch), len(todo.delete)
        if todo.send or todo.touch or todo.delete:  # else the plan's listing verified it
            sent = [entry.path for entry, _ in todo.send] if checksum else []
            await verify(source, target, want, sent)
        report.verified = True
    finally:
        await asyncio.gather(source.close(), target.close())
    report.seconds = time.monotonic() - start
    return report


async def _all(coros: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run ``coros`` concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()


async def verify(source: Tree, target: Tree, want: Manifest, sent: list[str]) -> None:
    """Every source file is on the target with its size and mtime; the files ``sent`` have
    the same SHA-256 on both sides (SyncError naming the first differences)."""
    have = await target.manifest()
    wrong = [
        path
        for path, entry in want.files.items()
        if (there := have.files.get(path)) is None
        or (there.size, there.mtime) != (entry.size, entry.mtime)
    ]
    if not wrong and sent:
        mine, theirs = await asyncio.gather(source.hashes(sent), target.hashes(sent))
        wrong = [path for path in sent if mine[path] != theirs[path]]
    if wrong:
        raise SyncError(
            f"{target} differs from {source} after the copy: {', '.join(wrong[:5])}"
            + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""),
            hint="a file changed during the copy? run the sync again",
        )
