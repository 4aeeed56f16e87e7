"""A remote host as a :class:`~seglab.machines.base.Machine`, over its one SSH connection.

Each command is one session channel on the host's connection; argv is quoted for the
remote POSIX shell. Files go through the connection's SFTP channel. When the host is not
online, a call waits up to ``wait_online`` seconds for the connection to come back (so a
restarted telemetry stream resumes as soon as the host does) and otherwise raises
:class:`~seglab.machines.base.CommandError` with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncssh

from seglab.machines.base import DEFAULT_TIMEOUT, CommandError, CommandResult, Machine
from seglab.remote.connection import HostConnection, NotConnectedError
from seglab.remote.files import RemoteFileMissing, RemoteFiles
from seglab.remote.forward import PortForward, SocketForward

log = logging.getLogger(__name__)

_FINISH_TIMEOUT = 2.0
_FORWARD_WAIT = 5.0


class RemoteStream:
    """A long-lived remote command whose stdout is read line by line."""

    def __init__(self, process: asyncssh.SSHClientProcess[str]) -> None:
        self._process = process
        self._ended: str | None = None

    @property
    def pid(self) -> int | None:
        """Remote processes have no local pid."""
        return None

    async def readline(self) -> str | None:
        """The next stdout line; None once stdout ended or the connection dropped."""
        try:
            line = await self._process.stdout.readline()
        except (asyncssh.Error, OSError) as exc:
            self._ended = f"the SSH channel closed: {exc}"
            return None
        if not line:
            return None
        return line.rstrip("\r\n")

    async def finish(self) -> tuple[int | None, str]:
        """Close the channel if the command still runs; its exit status and stderr tail."""
        process = self._process
        if process.returncode is None:
            process.close()
        try:
            await asyncio.wait_for(process.wait_closed(), _FINISH_TIMEOUT)
            stderr = await asyncio.wait_for(process.stderr.read(), _FINISH_TIMEOUT)
        except (asyncio.TimeoutError, asyncssh.Error, OSError) as exc:
            log.debug("remote stream did not close cleanly: %s", exc)
            stderr = ""
        if self._ended:
            stderr = f"{stderr}\n{self._ended}".strip()
        return process.returncode, stderr[-2000:]


def command_line(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The remote shell's command line for ``argv`` (``env`` set through ``env(1)``)."""
    if env:
        argv = ["env", *(f"{key}={value}" for key, value in env.items()), *argv]
    return shlex.join(argv)


class SSHMachine(Machine):
    """Host ``connection.name`` over its supervised connection.

    ``start`` connects it on first use (default: start the connection's supervisor);
    ``docker`` is the forward of the host's engine socket, when there is one.
    """

    is_local = False

    def __init__(
        self,
        connection: HostConnection,
        *,
        docker: SocketForward | None = None,
        start: Callable[[], Awaitable[None]] | None = None,
        wait_online: float = 30.0,
    ) -> None:
        self.name = connection.name
        self.connection = connection
        self.files = RemoteFiles(connection, wait_online)
        self.docker = docker
        self.wait_online = wait_online
        self.channels_opened = 0
        self._start = start or connection.start
        self.ports: list[PortForward] = []

    async def _conn(self) -> asyncssh.SSHClientConnection:
        await self._start()
        try:
            return await self.connection.connection(self.wait_online)
        except NotConnectedError as exc:
            raise CommandError(str(exc)) from exc

    async def connect(self) -> asyncssh.SSHClientConnection:
        """The host's connection, started on first use and awaited up to ``wait_online``
        seconds (CommandError when the host is not online); opens no channel."""
        return await self._conn()

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> CommandResult:
        """Run ``argv`` on the host to completion within ``timeout`` seconds."""
        conn = await self._conn()
        feed: dict[str, Any] = {"stdin": asyncssh.DEVNULL} if stdin is None else {"input": stdin}
        try:
            self.channels_opened += 1
            result = await conn.run(
                command_line(argv, env),
                check=False,
                timeout=timeout,
                encoding="utf-8",
                errors="replace",
                **feed,
            )
        except asyncssh.TimeoutError as exc:
            raise TimeoutError(f"{self.name}: {argv[0]} took longer than {timeout:g} s") from exc
        except (asyncssh.Error, OSError) as exc:
            raise CommandError(f"cannot run {argv[0]} on {self.name}: {exc}") from exc
        returncode = result.returncode
        return CommandResult(
            returncode=-1 if returncode is None else returncode,
            stdout=str(result.stdout or ""),
            stderr=str(result.stderr or ""),
        )

    async def stream(self, argv: Sequence[str]) -> RemoteStream:
        """Start ``argv`` on the host; stdout is read line by line."""
        conn = await self._conn()
        try:
            process = await conn.create_process(
                shlex.join(argv), stdin=asyncssh.DEVNULL, encoding="utf-8", errors="replace"
            )
        except (asyncssh.Error, OSError) as exc:
            raise CommandError(f"cannot start {argv[0]} on {self.name}: {exc}") from exc
        self.channels_opened += 1
        return RemoteStream(process)

    async def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        """The remote file's bytes from ``offset`` (over SFTP; ``size`` at most when not
        negative)."""
        await self._start()
        try:
            return await self.files.read_bytes(path, offset, size)
        except RemoteFileMissing as exc:
            raise FileNotFoundError(str(exc)) from exc

    async def write_bytes(self, path: str, data: bytes) -> None:
        """Write the remote file (its folder is created)."""
        await self._start()
        await self.files.write_bytes(path, data)

    async def listdir(self, path: str) -> list[str]:
        """The remote folder's names, sorted."""
        await self._start()
        try:
            return await self.files.listdir(path)
        except RemoteFileMissing as exc:
            raise FileNotFoundError(str(exc)) from exc

    async def exists(self, path: str) -> bool:
        """Whether the remote path exists."""
        await self._start()
        return await self.files.exists(path)

    async def forward_port(self, port: int, local_port: int = 0) -> PortForward:
        """Forward the host's ``127.0.0.1:port`` (kept across reconnects until stopped)."""
        await self._start()
        forward = PortForward(self.connection, port, local_port=local_port, owner=self.ports)
        await forward.start(self.wait_online)
        self.ports.append(forward)
        return forward

    def _docker(self) -> SocketForward:
        if self.docker is None:
            raise CommandError(f"host {self.name}: its Docker socket is not forwarded")
        return self.docker

    @property
    def docker_url(self) -> str:
        """The private local socket forwarding the host's engine."""
        return f"unix://{self._docker().local_path}"

    async def docker_ready(self) -> str:
        """:attr:`docker_url` once the forward is up (CommandError when it is not)."""
        docker = self._docker()
        await self._conn()
        for _ in range(int(_FORWARD_WAIT / 0.05)):
            if docker.established and docker.local_path.exists():
                return self.docker_url
            await asyncio.sleep(0.05)
        raise CommandError(f"host {self.name}: the Docker socket forward did not come up")
