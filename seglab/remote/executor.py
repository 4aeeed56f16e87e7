"""The telemetry :class:`~seglab.telemetry.executor.Executor` over a host's SSH connection.

Each command is one session channel on the host's single connection; argv is quoted for the
remote POSIX shell. When the host is not online, a call waits up to ``wait_online`` seconds
for the connection to come back (so a restarted stream resumes as soon as the host does)
and otherwise raises :class:`~seglab.telemetry.executor.ExecutorError` with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Sequence
from typing import Any

import asyncssh

from seglab.remote.connection import HostConnection, NotConnectedError
from seglab.telemetry.executor import CommandResult, ExecutorError

log = logging.getLogger(__name__)

_FINISH_TIMEOUT = 2.0


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


class RemoteExecutor:
    """Runs commands on one remote host over its :class:`HostConnection`."""

    def __init__(self, connection: HostConnection, wait_online: float = 30.0) -> None:
        self.connection = connection
        self.wait_online = wait_online
        self.channels_opened = 0

    async def _conn(self) -> asyncssh.SSHClientConnection:
        try:
            return await self.connection.connection(self.wait_online)
        except NotConnectedError as exc:
            raise ExecutorError(str(exc)) from exc

    async def stream(self, argv: Sequence[str]) -> RemoteStream:
        """Start ``argv`` on the host; stdout is read line by line."""
        conn = await self._conn()
        try:
            process = await conn.create_process(
                shlex.join(argv), stdin=asyncssh.DEVNULL, encoding="utf-8", errors="replace"
            )
        except (asyncssh.Error, OSError) as exc:
            raise ExecutorError(f"cannot start {argv[0]} on {self.connection.name}: {exc}") from exc
        self.channels_opened += 1
        return RemoteStream(process)

    async def run(
        self, argv: Sequence[str], timeout: float, stdin: str | None = None
    ) -> CommandResult:
        """Run ``argv`` on the host to completion within ``timeout`` seconds (``stdin``:
        its input, else none)."""
        conn = await self._conn()
        feed: dict[str, Any] = {"stdin": asyncssh.DEVNULL} if stdin is None else {"input": stdin}
        try:
            self.channels_opened += 1
            result = await conn.run(
                shlex.join(argv),
                check=False,
                timeout=timeout,
                encoding="utf-8",
                errors="replace",
                **feed,
            )
        except asyncssh.TimeoutError as exc:
            raise asyncio.TimeoutError(f"{argv[0]} took longer than {timeout:g} s") from exc
        except (asyncssh.Error, OSError) as exc:
            raise ExecutorError(f"cannot run {argv[0]} on {self.connection.name}: {exc}") from exc
        returncode = result.returncode
        return CommandResult(
            returncode=-1 if returncode is None else returncode,
            stdout=str(result.stdout or ""),
            stderr=str(result.stderr or ""),
        )
