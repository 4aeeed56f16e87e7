"""Running the commands telemetry needs, locally now and over SSH later, behind one protocol.

An :class:`Executor` starts a long-lived command and hands back its stdout line by line,
or runs a short command to completion. :class:`LocalExecutor` uses asyncio subprocesses;
the remote executor (seglab.remote) implements the same two methods over one SSH
connection per host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from seglab.errors import UnavailableError

log = logging.getLogger(__name__)


class ExecutorError(UnavailableError):
    """The command could not be started at all (not found, not executable, no connection).

    ``not_found`` is True only when the host answered that the program does not exist.
    """

    def __init__(self, message: str, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A finished short command."""

    returncode: int
    stdout: str
    stderr: str


class Stream(Protocol):
    """A running command whose stdout is read line by line."""

    @property
    def pid(self) -> int | None:
        """The process id where the executor knows it (local processes)."""

    async def readline(self) -> str | None:
        """The next stdout line without its newline; None once stdout has ended."""

    async def finish(self) -> tuple[int | None, str]:
        """Stop the command if it still runs; its exit status and the tail of stderr."""


class Executor(Protocol):
    """Starts commands on one host."""

    async def stream(self, argv: Sequence[str]) -> Stream:
        """Start a long-lived command (raises :class:`ExecutorError` when it cannot start)."""

    async def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """Run a command to completion (raises :class:`ExecutorError` or TimeoutError)."""


class LocalStream:
    """A local subprocess read through asyncio pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @property
    def pid(self) -> int | None:
        """The local process id."""
        return self._process.pid

    async def readline(self) -> str | None:
        """The next stdout line; None at end of stream."""
        assert self._process.stdout is not None
        raw = await self._process.stdout.readline()
        if not raw:
            return None
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    async def finish(self) -> tuple[int | None, str]:
        """Terminate (then kill) the process if needed and collect its status and stderr."""
        process = self._process
        if process.returncode is None:
            # os.kill, not process.terminate(): Popen.send_signal polls and may reap the
            # child before asyncio's watcher sees it, which then reports exit status 255.
            # Until asyncio reaps it, the (possibly zombie) child keeps its pid.
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 2.0)
            except asyncio.TimeoutError:
                log.warning("process %s ignored SIGTERM; killing it", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                await process.wait()
        stderr = b""
        if process.stderr is not None:
            stderr = await process.stderr.read()
        return process.returncode, stderr.decode("utf-8", "replace")[-2000:]


class LocalExecutor:
    """Runs commands on this machine."""

    async def stream(self, argv: Sequence[str]) -> LocalStream:
        """Start ``argv`` with stdout and stderr piped."""
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise ExecutorError(
                f"cannot start {argv[0]}: {exc.strerror or exc}",
                not_found=isinstance(exc, FileNotFoundError),
            ) from exc
        return LocalStream(process)

    async def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """Run ``argv`` to completion within ``timeout`` seconds."""
        stream = await self.stream(argv)
        process = stream._process
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            await stream.finish()  # never leave a child behind
            raise
        return CommandResult(
            returncode=process.returncode if process.returncode is not None else -1,
            stdout=stdout.decode("utf-8", "replace"),
            stderr=stderr.decode("utf-8", "replace"),
        )
