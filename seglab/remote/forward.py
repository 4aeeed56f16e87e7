"""A remote UNIX socket (the Docker engine's) forwarded to a private local UNIX socket.

The local socket lives in a directory only the user can enter (0700) and is itself 0600;
it is re-established at the same path after every reconnect, so a docker client built on
``unix://<local path>`` keeps working across link loss (calls made while the host is offline
fail with "connection refused" and succeed again once it is back). Never a TCP port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from pathlib import Path

import asyncssh

from seglab.errors import UnavailableError
from seglab.remote.connection import HostConnection

log = logging.getLogger(__name__)

# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS), including the final NUL.
MAX_SOCKET_PATH = 103


class ForwardError(UnavailableError):
    """The local socket cannot be placed safely (directory owned by someone else, too long)."""


def forward_dir() -> Path:
    """The private directory for local forward sockets (created 0700, checked on every use).

    ``$XDG_RUNTIME_DIR/seglab`` when that is set, else ``<tmp>/seglab-<uid>``.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        path = Path(runtime) / "seglab"
    else:
        path = Path(tempfile.gettempdir()) / f"seglab-{os.getuid()}"
    with contextlib.suppress(FileExistsError):  # whatever is there is checked just below
        path.mkdir(mode=0o700, parents=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ForwardError(
            f"{path} exists but is not a directory owned by you; remove it so seglab can "
            f"create its private socket directory there"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        path.chmod(0o700)
    return path


def local_socket_path(host: str, purpose: str = "docker") -> Path:
    """Where host `host`'s forwarded `purpose` socket lives on this machine."""
    path = forward_dir() / f"{host}.{purpose}.sock"
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ForwardError(
            f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes; set XDG_RUNTIME_DIR "
            f"to a shorter directory"
        )
    return path


class SocketForward:
    """Keeps `remote_path` on the host forwarded to `local_path` while the host is online."""

    def __init__(self, connection: HostConnection, remote_path: str, local_path: Path) -> None:
        self.connection = connection
        self.remote_path = remote_path
        self.local_path = local_path
        self.established = 0
        self._inode: int | None = None
        self._listener: asyncssh.SSHListener | None = None
        self._active = False

    async def start(self) -> None:
        """Forward now if the host is online, and again after every reconnect."""
        if self._active:
            return
        self._active = True
        self.connection.on_connect(self._establish)
        if self.connection.is_online:
            await self._establish(await self.connection.connection(timeout=0))

    async def stop(self) -> None:
        """Stop forwarding and remove the local socket."""
        self._active = False
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            await listener.wait_closed()
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # already gone
            if self.local_path.lstat().st_ino == self._inode:  # never another forward's
                self.local_path.unlink()

    async def _establish(self, conn: asyncssh.SSHClientConnection) -> None:
        if not self._active:
            return
        forward_dir()  # re-check the directory's owner and mode before every listen
        old, self._listener = self._listener, None
        if old is not None:
            old.close()
        # A socket left by the previous connection is replaced (asyncio removes stale ones).
        self._listener = await conn.forward_local_path(str(self.local_path), self.remote_path)
        self.local_path.chmod(0o600)
        self._inode = self.local_path.lstat().st_ino
        self.established += 1
        log.info("%s: %s forwarded to %s", self.connection.name, self.remote_path, self.local_path)


class PortForward:
    """Keeps TCP `remote_host:remote_port` (as the server sees it) reachable on 127.0.0.1.

    For Jupyter and TensorBoard bound to the server's loopback. The local port is chosen on
    the first listen (unless given) and kept across reconnects. ``owner``: the list that
    holds the open forwards (this one leaves it when stopped).
    """

    def __init__(
        self,
        connection: HostConnection,
        remote_port: int,
        remote_host: str = "127.0.0.1",
        local_port: int = 0,
        owner: list[PortForward] | None = None,
    ) -> None:
        self.connection = connection
        self.owner = owner
        self.remote_host = remote_host
        self.remote_port = remote_port
        self.local_port = local_port
        self.established = 0
        self.error: str | None = None
        self._listener: asyncssh.SSHListener | None = None
        self._active = False

    async def start(self, timeout: float = 30.0) -> int:
        """Listen now (waiting up to `timeout` s for the host), and after every reconnect."""
        if not self._active:
            self._active = True
            self.connection.on_connect(self._establish)
            await self._establish(await self.connection.connection(timeout))
        return self.local_port

    async def stop(self) -> None:
        """Stop listening (and leave the ``owner`` list given at creation)."""
        self._active = False
        if self.owner is not None and self in self.owner:
            self.owner.remove(self)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            await listener.wait_closed()

    async def _establish(self, conn: asyncssh.SSHClientConnection) -> None:
        if not self._active:
            return
        old, self._listener = self._listener, None
        if old is not None:
            old.close()
        try:
            listener = await conn.forward_local_port(
                "127.0.0.1", self.local_port, self.remote_host, self.remote_port
            )
        except OSError as exc:
            if not self.established:
                raise
            # Another program took the port while the host was away: this forward stays
            # down (and says so) rather than taking the host's connection down with it.
            self.error = f"cannot listen on 127.0.0.1:{self.local_port} again: {exc}"
            log.warning("%s: %s", self.connection.name, self.error)
            return
        self.error = None
        self._listener = listener
        self.local_port = listener.get_port()
        self.established += 1
        log.info(
            "%s: %s:%d forwarded to 127.0.0.1:%d",
            self.connection.name,
            self.remote_host,
            self.remote_port,
            self.local_port,
        )
