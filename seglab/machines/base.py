"""What seglab does on a machine, behind one interface, and its synchronous façade.

A :class:`Machine` runs commands (to completion, or streamed line by line), reads, writes
and lists files, forwards a TCP port to 127.0.0.1 here, and names its Docker engine. Its
methods are coroutines (telemetry and SSH are asyncio); :class:`MachineSync` offers the same
operations to synchronous code by running them on the process's one loop thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from seglab.errors import UnavailableError

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0


class CommandError(UnavailableError):
    """A command could not be started at all (not found, not executable, no connection).

    ``not_found`` is True only when the machine answered that the program does not exist.
    """

    def __init__(self, message: str, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A finished command: its exit status (-1 when unknown) and its output."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stderr, else stdout, stripped (what to show when the command failed)."""
        return self.stderr.strip() or self.stdout.strip()


class Stream(Protocol):
    """A running command whose stdout is read line by line."""

    @property
    def pid(self) -> int | None:
        """The process id where the machine knows it (local processes)."""

    async def readline(self) -> str | None:
        """The next stdout line without its newline; None once stdout has ended."""

    async def finish(self) -> tuple[int | None, str]:
        """Stop the command if it still runs; its exit status and the tail of stderr."""


class Forwarded(Protocol):
    """A port of a machine reachable on 127.0.0.1 here."""

    @property
    def local_port(self) -> int:
        """The port on 127.0.0.1."""

    async def stop(self) -> None:
        """Stop forwarding."""


class Machine(ABC):
    """A machine seglab acts on (this one, or a remote host over SSH)."""

    name: str
    is_local: bool

    @abstractmethod
    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> CommandResult:
        """Run ``argv`` to completion, whatever its exit status.

        ``env`` adds variables to the machine's environment. Raises :class:`CommandError`
        when it cannot start and :class:`TimeoutError` after ``timeout`` seconds.
        """

    @abstractmethod
    async def stream(self, argv: Sequence[str]) -> Stream:
        """Start a long-lived command (raises :class:`CommandError` when it cannot start)."""

    @abstractmethod
    async def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        """File ``path`` from byte ``offset``: ``size`` bytes at most, or to its end when
        ``size`` is negative (FileNotFoundError when missing)."""

    @abstractmethod
    async def write_bytes(self, path: str, data: bytes) -> None:
        """Write file ``path`` (its folder is created)."""

    @abstractmethod
    async def listdir(self, path: str) -> list[str]:
        """The names in folder ``path``, sorted (FileNotFoundError when missing)."""

    @abstractmethod
    async def exists(self, path: str) -> bool:
        """Whether ``path`` exists."""

    @abstractmethod
    async def forward_port(self, port: int, local_port: int = 0) -> Forwarded:
        """Make the machine's ``127.0.0.1:port`` reachable on 127.0.0.1 here."""

    @property
    @abstractmethod
    def docker_url(self) -> str:
        """The URL of the machine's Docker engine as seen from here (``unix://...``; for a
        remote host a forwarded socket, which may not be up yet)."""

    async def docker_ready(self) -> str:
        """:attr:`docker_url` once the engine can be reached through it."""
        return self.docker_url


class Runner(Protocol):
    """Runs a coroutine to completion for synchronous code (:class:`LoopThread`)."""

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` and wait for its result."""
        ...


class MachineSync:
    """A :class:`Machine` for synchronous callers: each call runs on the loop thread."""

    def __init__(self, machine: Machine, runner: Runner) -> None:
        self.machine = machine
        self.runner = runner

    @property
    def name(self) -> str:
        """The machine's host name."""
        return self.machine.name

    @property
    def is_local(self) -> bool:
        """Whether it is this machine."""
        return self.machine.is_local

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> CommandResult:
        """:meth:`Machine.run`, waiting for it."""
        return self.runner.call(
            self.machine.run(argv, stdin=stdin, env=env, timeout=timeout), timeout + 30
        )

    def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        """:meth:`Machine.read_bytes`."""
        return self.runner.call(self.machine.read_bytes(path, offset, size))

    def read_text(self, path: str) -> str:
        """A whole file as text (invalid UTF-8 replaced)."""
        return self.read_bytes(path).decode("utf-8", "replace")

    def write_text(self, path: str, text: str) -> None:
        """Write ``text`` to ``path`` (its folder is created)."""
        self.runner.call(self.machine.write_bytes(path, text.encode()))

    def listdir(self, path: str) -> list[str]:
        """:meth:`Machine.listdir`."""
        return self.runner.call(self.machine.listdir(path))

    def exists(self, path: str) -> bool:
        """:meth:`Machine.exists`."""
        return self.runner.call(self.machine.exists(path))

    def forward_port(self, port: int, local_port: int = 0) -> Forwarded:
        """:meth:`Machine.forward_port`; stop it with :meth:`stop_forward`."""
        return self.runner.call(self.machine.forward_port(port, local_port))

    def stop_forward(self, forward: Forwarded) -> None:
        """Stop a forward made by :meth:`forward_port`."""
        self.runner.call(forward.stop(), 30)

    def docker_url(self) -> str:
        """:meth:`Machine.docker_url` (for a remote host: once its forward is up)."""
        return self.runner.call(self.machine.docker_ready())
