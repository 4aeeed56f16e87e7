"""This machine: commands as asyncio subprocesses, files through the file system."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from seglab.hosts import DEFAULT_DOCKER_SOCKET, LOCAL
from seglab.machines.base import DEFAULT_TIMEOUT, CommandError, CommandResult, Machine

log = logging.getLogger(__name__)


class LocalStream:
    """A local subprocess read through asyncio pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @property
    def pid(self) -> int | None:
        """The local process id."""
        return self.process.pid

    async def readline(self) -> str | None:
        """The next stdout line; None at end of stream."""
        assert self.process.stdout is not None
        raw = await self.process.stdout.readline()
        if not raw:
            return None
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    async def finish(self) -> tuple[int | None, str]:
        """Terminate (then kill) the process if needed and collect its status and stderr."""
        process = self.process
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


@dataclass(frozen=True)
class _SamePort:
    """A local port needs no forwarding: it is reachable as it is."""

    local_port: int

    async def stop(self) -> None:
        """Nothing to stop."""


class LocalMachine(Machine):
    """This machine (``docker_socket``: its engine; ``DOCKER_HOST`` overrides the default)."""

    is_local = True

    def __init__(self, name: str = LOCAL, docker_socket: str = DEFAULT_DOCKER_SOCKET) -> None:
        self.name = name
        self.docker_socket = docker_socket

    async def _start(
        self, argv: Sequence[str], stdin: int, env: Mapping[str, str] | None
    ) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **env} if env else None,
            )
        except OSError as exc:
            raise CommandError(
                f"cannot start {argv[0]}: {exc.strerror or exc}",
                not_found=isinstance(exc, FileNotFoundError),
            ) from exc

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> CommandResult:
        """Run ``argv`` here; the child is killed on timeout or cancellation."""
        pipe = asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE
        process = await self._start(argv, pipe, env)
        data = None if stdin is None else stdin.encode()
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(data), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            await LocalStream(process).finish()  # never leave a child behind
            raise
        return CommandResult(
            returncode=process.returncode if process.returncode is not None else -1,
            stdout=stdout.decode("utf-8", "replace"),
            stderr=stderr.decode("utf-8", "replace"),
        )

    async def stream(self, argv: Sequence[str]) -> LocalStream:
        """Start ``argv`` with stdout and stderr piped."""
        return LocalStream(await self._start(argv, asyncio.subprocess.DEVNULL, None))

    async def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        """The file's bytes from ``offset`` (``size`` at most when not negative)."""

        def read() -> bytes:
            with Path(path).expanduser().open("rb") as handle:
                handle.seek(offset)
                return handle.read(size)

        return await asyncio.to_thread(read)

    async def write_bytes(self, path: str, data: bytes) -> None:
        """Write the file (its folder is created)."""

        def write() -> None:
            target = Path(path).expanduser()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

        await asyncio.to_thread(write)

    async def listdir(self, path: str) -> list[str]:
        """The folder's names, sorted."""
        return sorted(await asyncio.to_thread(os.listdir, Path(path).expanduser()))

    async def exists(self, path: str) -> bool:
        """Whether the path exists."""
        return Path(path).expanduser().exists()

    async def forward_port(self, port: int, local_port: int = 0) -> _SamePort:
        """The port itself (``local_port`` cannot differ here)."""
        return _SamePort(port)

    @property
    def docker_url(self) -> str:
        """``DOCKER_HOST`` for the default socket when it is set, else the host's socket."""
        env = os.environ.get("DOCKER_HOST")
        if env and self.docker_socket == DEFAULT_DOCKER_SOCKET:
            return env
        return f"unix://{self.docker_socket}"
