"""Run-directory files on a remote host, over SFTP on the host's SSH connection.

Reads ``events.jsonl`` (whole, or incrementally from a byte offset, complete lines only)
and fetches a run's exports, best checkpoint or whole directory, as
``seglab pull RUN --what export|best|all`` needs. Remote paths may start with ``~/``
(relative to the login directory, as the hosts.yaml ``runs_root`` allows).
"""

from __future__ import annotations

import asyncio
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import asyncssh

from seglab.errors import UnavailableError
from seglab.events import Event, read_jsonl
from seglab.remote.connection import HostConnection, NotConnectedError

What = Literal["export", "best", "all"]
WHAT: tuple[What, ...] = ("export", "best", "all")
EVENTS_FILE = "events.jsonl"
_PARTS: dict[str, str] = {"export": "export", "best": "checkpoints/best.pt"}


class RemoteFileError(UnavailableError):
    """A remote file or directory is missing or unreadable; the message names it."""


class RemoteFileMissing(RemoteFileError):
    """A remote file or directory does not exist."""


def sftp_path(path: str) -> str:
    """`path` as SFTP understands it: `~/x` becomes `x` (relative to the login directory)."""
    if path == "~":
        return "."
    if path.startswith("~/"):
        return path[2:] or "."
    return path


@dataclass(frozen=True)
class EventChunk:
    """Events read from one offset, and the offset just past the last complete line."""

    events: list[Event]
    offset: int


class RemoteFiles:
    """SFTP access to one host's files (one SFTP channel per connection, opened on use)."""

    def __init__(self, connection: HostConnection, wait_online: float = 30.0) -> None:
        self.connection = connection
        self.wait_online = wait_online
        self._sftp: asyncssh.SFTPClient | None = None
        self._sftp_conn: asyncssh.SSHClientConnection | None = None
        self._opening = asyncio.Lock()

    async def _client(self) -> asyncssh.SFTPClient:
        try:
            conn = await self.connection.connection(self.wait_online)
        except NotConnectedError as exc:
            raise RemoteFileError(str(exc)) from exc
        async with self._opening:  # concurrent first uses share one SFTP channel
            if self._sftp is None or self._sftp_conn is not conn:
                try:
                    self._sftp = await conn.start_sftp_client()
                except (asyncssh.Error, OSError) as exc:
                    raise RemoteFileError(
                        f"cannot start SFTP on {self.connection.name}: {exc}"
                    ) from exc
                self._sftp_conn = conn
            return self._sftp

    async def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        """The bytes of remote file `path` from `offset` to its current end (`size` at
        most when not negative)."""
        sftp = await self._client()
        try:
            async with sftp.open(sftp_path(path), "rb") as handle:
                await handle.seek(offset)
                data: bytes = await handle.read(size)
                return data
        except asyncssh.SFTPNoSuchFile as exc:
            raise RemoteFileMissing(f"{self.connection.name}:{path} does not exist") from exc
        except asyncssh.SFTPError as exc:
            raise RemoteFileError(f"cannot read {self.connection.name}:{path}: {exc}") from exc

    async def write_bytes(self, path: str, data: bytes) -> None:
        """Write remote file `path` (its folder is created)."""
        sftp = await self._client()
        target = sftp_path(path)
        try:
            folder = posixpath.dirname(target)
            if folder:
                await sftp.makedirs(folder, exist_ok=True)
            async with sftp.open(target, "wb") as handle:
                await handle.write(data)
        except asyncssh.SFTPError as exc:
            raise RemoteFileError(f"cannot write {self.connection.name}:{path}: {exc}") from exc

    async def listdir(self, path: str) -> list[str]:
        """The names in remote folder `path`, sorted (without ``.`` and ``..``)."""
        sftp = await self._client()
        try:
            names = await sftp.listdir(sftp_path(path))
        except asyncssh.SFTPNoSuchFile as exc:
            raise RemoteFileMissing(f"{self.connection.name}:{path} does not exist") from exc
        except asyncssh.SFTPError as exc:
            raise RemoteFileError(f"cannot list {self.connection.name}:{path}: {exc}") from exc
        return sorted(name for name in names if name not in (".", ".."))

    async def exists(self, path: str) -> bool:
        """Whether remote `path` exists."""
        sftp = await self._client()
        try:
            return bool(await sftp.exists(sftp_path(path)))
        except asyncssh.SFTPError as exc:
            raise RemoteFileError(f"cannot look at {self.connection.name}:{path}: {exc}") from exc

    async def read_events(self, run_dir: str, offset: int = 0) -> EventChunk:
        """The run's events from byte `offset` of its events.jsonl (complete lines only)."""
        data = await self.read_bytes(posixpath.join(run_dir, EVENTS_FILE), offset)
        end = data.rfind(b"\n") + 1
        lines = data[:end].decode("utf-8", "replace").splitlines()
        return EventChunk(list(read_jsonl(lines)), offset + end)

    async def fetch(self, run_dir: str, what: What, dest: Path) -> list[Path]:
        """Copy part of a run dir into `dest` (created); the local files written, sorted.

        ``export``: the ``export/`` folder; ``best``: ``checkpoints/best.pt``; ``all``: the
        whole run directory (its contents land directly in `dest`).
        """
        sftp = await self._client()
        remote = sftp_path(run_dir)
        if what != "all":
            remote = posixpath.join(remote, _PARTS[what])
        target = dest if what == "all" else dest / posixpath.basename(_PARTS[what])
        dest.mkdir(parents=True, exist_ok=True)
        try:
            if what == "all":
                names = [
                    posixpath.join(remote, name)
                    for name in await sftp.listdir(remote)
                    if name not in (".", "..")
                ]
                await sftp.get(names, str(dest), recurse=True, preserve=True)
            else:
                await sftp.get(remote, str(target), recurse=True, preserve=True)
        except asyncssh.SFTPNoSuchFile as exc:
            raise RemoteFileError(
                f"{self.connection.name}:{remote} does not exist"
                + (" (the run has not written it yet)" if what != "all" else "")
            ) from exc
        except asyncssh.SFTPError as exc:
            raise RemoteFileError(f"cannot fetch {self.connection.name}:{remote}: {exc}") from exc
        if target.is_file():
            return [target]
        return sorted(path for path in target.rglob("*") if path.is_file())
