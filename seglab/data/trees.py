"""A dataset folder on one machine, as `seglab data sync` reads and writes it.

:class:`LocalTree` is a folder here (plain file calls); :class:`RemoteTree` one on a remote
host through an SFTP channel of the host's one SSH connection (asyncssh pipelines the
requests of a large read or write). A local tree lists itself with the probe's
``manifest``; a remote one walks its folders over that same SFTP channel (each directory
read returns names with their size, mtime and type; sibling folders are read
concurrently), so no command is started on the host. Both hash with the probe's ``hash``
(a ``python3`` command on a remote host, needed only when sizes match and mtimes
differ), read and write byte ranges, and land a finished partial file under its final
name with one atomic rename (``posix-rename@openssh.com`` over SFTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncssh

from seglab.data.checks import ask
from seglab.data.probe import PART_SUFFIX
from seglab.errors import UnavailableError
from seglab.machines.base import Machine


@dataclass(frozen=True)
class Entry:
    """One file of a tree: path relative to the root (``/``-separated), size, mtime (s)."""

    path: str
    size: int
    mtime: int


@dataclass(frozen=True)
class Manifest:
    """A tree's files and the partial files an interrupted sync left, by relative path, and
    the free bytes where it is."""

    present: bool
    files: dict[str, Entry]
    parts: dict[str, Entry]
    free: int


LISTING_FOLDERS = 16
"""Remote folders read at once while listing a tree (each an open SFTP directory handle)."""


def _entries(rows: Sequence[Sequence[Any]]) -> dict[str, Entry]:
    return {row[0]: Entry(row[0], int(row[1]), int(row[2]) // 10**9) for row in rows}


class Tree(ABC):
    """A dataset root on one machine."""

    def __init__(self, machine: Machine, root: str) -> None:
        self.machine = machine
        self.root = root

    def __str__(self) -> str:
        return f"{self.machine.name}:{self.root}"

    async def manifest(self) -> Manifest:
        """Every file under the root (one probe command)."""
        answer = await ask(self.machine, {"op": "manifest", "root": self.root})
        files, parts = _entries(answer["files"]), _entries(answer["parts"])
        return Manifest(answer["present"], files, parts, answer["free"])

    async def hashes(self, paths: Sequence[str]) -> dict[str, str | None]:
        """SHA-256 of each relative path (None where it is missing)."""
        if not paths:
            return {}
        found: dict[str, str | None] = await ask(
            self.machine, {"op": "hash", "root": self.root, "paths": list(paths)}
        )
        return found

    @abstractmethod
    async def read(self, path: str, offset: int, size: int) -> bytes:
        """``size`` bytes of file ``path`` from ``offset``."""

    @abstractmethod
    async def write(self, part: str, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` of partial file ``part`` (created with its folder)."""

    @abstractmethod
    async def land(self, part: str, path: str, mtime: int) -> None:
        """Give ``part`` the mtime ``mtime`` and rename it to ``path`` atomically."""

    @abstractmethod
    async def touch(self, path: str, mtime: int) -> None:
        """Set the mtime of ``path``."""

    @abstractmethod
    async def remove(self, path: str) -> None:
        """Delete file ``path`` (nothing when it is already gone)."""

    @abstractmethod
    async def close(self) -> None:
        """Release what the tree holds open."""


class LocalTree(Tree):
    """A folder on this machine."""

    def _abs(self, path: str) -> str:
        return os.path.join(os.path.expanduser(self.root), path)

    async def read(self, path: str, offset: int, size: int) -> bytes:
        """Read with one pread."""

        def read() -> bytes:
            with open(self._abs(path), "rb") as handle:
                return os.pread(handle.fileno(), size, offset)

        return await asyncio.to_thread(read)

    async def write(self, part: str, offset: int, data: bytes) -> None:
        """Write with one pwrite."""

        def write() -> None:
            target = self._abs(part)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, data, offset)
            finally:
                os.close(fd)

        await asyncio.to_thread(write)

    async def land(self, part: str, path: str, mtime: int) -> None:
        """utime, then os.replace."""
        os.utime(self._abs(part), (mtime, mtime))
        os.replace(self._abs(part), self._abs(path))

    async def touch(self, path: str, mtime: int) -> None:
        """utime."""
        os.utime(self._abs(path), (mtime, mtime))

    async def remove(self, path: str) -> None:
        """unlink."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._abs(path))

    async def close(self) -> None:
        """Nothing is held open."""


class RemoteTree(Tree):
    """A folder on a remote host, through its own SFTP channel on the host's connection.

    ``machine`` is an :class:`~seglab.remote.machine.SSHMachine`.
    """

    def __init__(self, machine: Machine, root: str) -> None:
        super().__init__(machine, root)
        self._sftp: asyncssh.SFTPClient | None = None
        self._dirs: set[str] = set()
        self._handles: dict[str, asyncssh.SFTPClientFile] = {}
        self._lock = asyncio.Lock()

    def _abs(self, path: str) -> str:
        """``path`` under the root as SFTP names it (relative paths start at the home)."""
        root = "." if self.root == "~" else self.root
        root = root[2:] if root.startswith("~/") else root
        return posixpath.join(root, path) if path else root

    async def _client(self) -> asyncssh.SFTPClient:
        async with self._lock:
            if self._sftp is None:
                from seglab.remote.machine import SSHMachine

                machine = self.machine
                assert isinstance(machine, SSHMachine)
                conn = await machine.connect()
                try:
                    self._sftp = await conn.start_sftp_client()
                except (asyncssh.Error, OSError) as exc:
                    raise UnavailableError(f"cannot open SFTP to {machine.name}: {exc}") from exc
            return self._sftp

    async def manifest(self) -> Manifest:
        """Every file under the root, listed over SFTP (see the module doc); symlinks are
        not followed, as the probe's listing does not follow them."""
        sftp = await self._client()
        root = self._abs("")
        try:
            present = (await sftp.stat(root)).type == asyncssh.FILEXFER_TYPE_DIRECTORY
        except asyncssh.SFTPNoSuchFile:
            present = False
        except (asyncssh.SFTPError, OSError) as exc:
            raise UnavailableError(f"cannot list {self}: {exc}") from exc
        rows: list[Entry] = []
        if present:
            slots = asyncio.Semaphore(LISTING_FOLDERS)

            async def walk(rel: str) -> None:
                async with slots:
                    names = await sftp.readdir(self._abs(rel))
                folders = []
                for name in names:
                    filename = str(name.filename)
                    if filename in (".", ".."):
                        continue
                    path = f"{rel}/{filename}" if rel else filename
                    attrs = name.attrs
                    if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                        folders.append(path)
                    elif attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
                        rows.append(Entry(path, attrs.size or 0, attrs.mtime or 0))
                await asyncio.gather(*(walk(folder) for folder in folders))

            try:
                await walk("")
            except (asyncssh.SFTPError, OSError) as exc:
                raise UnavailableError(f"cannot list {self}: {exc}") from exc
        rows.sort(key=lambda entry: entry.path)
        files = {e.path: e for e in rows if not e.path.endswith(PART_SUFFIX)}
        parts = {e.path: e for e in rows if e.path.endswith(PART_SUFFIX)}
        return Manifest(present, files, parts, await self._free(sftp, root))

    async def _free(self, sftp: asyncssh.SFTPClient, path: str) -> int:
        """Free bytes for an unprivileged user where ``path`` is or would be created
        (``statvfs@openssh.com`` of its nearest existing folder; the probe's answer when
        the server lacks that extension)."""
        while True:
            try:
                stat = await sftp.statvfs(path)
            except asyncssh.SFTPNoSuchFile:
                if path in ("", ".", "/"):
                    raise UnavailableError(f"{self.machine.name}: no folder to measure") from None
                path = posixpath.dirname(path) or "."
                continue
            except asyncssh.SFTPOpUnsupported:
                free: int = await ask(self.machine, {"op": "free", "root": self.root})
                return free
            except (asyncssh.SFTPError, OSError) as exc:
                raise UnavailableError(f"cannot measure {self}: {exc}") from exc
            return int(stat.bavail * stat.frsize)

    async def read(self, path: str, offset: int, size: int) -> bytes:
        """A parallel SFTP read of the range."""
        sftp = await self._client()
        try:
            async with sftp.open(self._abs(path), "rb") as handle:
                data: bytes = await handle.read(size, offset)
        except (asyncssh.SFTPError, OSError) as exc:
            raise UnavailableError(
                f"cannot read {self.machine.name}:{self._abs(path)}: {exc}"
            ) from exc
        return data

    async def _makedirs(self, sftp: asyncssh.SFTPClient, folder: str) -> None:
        if folder and folder not in self._dirs:
            await sftp.makedirs(folder, exist_ok=True)
            self._dirs.add(folder)

    async def write(self, part: str, offset: int, data: bytes) -> None:
        """A pipelined SFTP write of the range (the file stays open until it lands)."""
        sftp = await self._client()
        target = self._abs(part)
        try:
            handle = self._handles.get(part)
            if handle is None:
                await self._makedirs(sftp, posixpath.dirname(target))
                pflags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT
                handle = await sftp.open(target, pflags, encoding=None)
                self._handles[part] = handle
            await handle.write(data, offset)
        except (asyncssh.SFTPError, OSError) as exc:
            raise UnavailableError(f"cannot write {self.machine.name}:{target}: {exc}") from exc

    async def land(self, part: str, path: str, mtime: int) -> None:
        """Close the partial file, set its mtime and posix-rename it over ``path``."""
        sftp = await self._client()
        try:
            handle = self._handles.pop(part)
            # One round trip: OpenSSH's sftp-server answers requests in the order sent.
            await asyncio.gather(
                handle.utime((mtime, mtime)),
                handle.close(),
                sftp.posix_rename(self._abs(part), self._abs(path)),
            )
        except (asyncssh.SFTPError, OSError) as exc:
            raise UnavailableError(
                f"cannot land {self.machine.name}:{self._abs(path)}: {exc}"
            ) from exc

    async def touch(self, path: str, mtime: int) -> None:
        """SFTP setstat of the times."""
        sftp = await self._client()
        try:
            await sftp.utime(self._abs(path), (mtime, mtime))
        except (asyncssh.SFTPError, OSError) as exc:
            raise UnavailableError(f"cannot touch {self.machine.name}:{path}: {exc}") from exc

    async def remove(self, path: str) -> None:
        """SFTP remove."""
        sftp = await self._client()
        try:
            await sftp.remove(self._abs(path))
        except asyncssh.SFTPNoSuchFile:
            return
        except (asyncssh.SFTPError, OSError) as exc:
            raise UnavailableError(f"cannot delete {self.machine.name}:{path}: {exc}") from exc

    async def close(self) -> None:
        """Close open partial files and the SFTP channel."""
        handles, self._handles = list(self._handles.values()), {}
        for handle in handles:
            with contextlib.suppress(asyncssh.Error, OSError):
                await handle.close()
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None


def tree(machine: Machine, root: str) -> Tree:
    """The tree at ``root`` on ``machine``."""
    return LocalTree(machine, root) if machine.is_local else RemoteTree(machine, root)
