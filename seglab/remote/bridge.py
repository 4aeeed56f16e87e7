"""The SSH layer for synchronous callers: :class:`RemoteHosts` on the process's loop thread.

The run manager and the CLI are synchronous (the Docker SDK blocks); asyncssh is asyncio.
The bridge keeps every connection, forward and remote machine on the workstation's one
:class:`~seglab.machines.loop.LoopThread` and hands their results back, so a remote engine is
used through its forwarded socket exactly like the local one.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from seglab.errors import UnavailableError
from seglab.hosts import Inventory
from seglab.machines import CommandError, CommandResult, LoopThread, MachineSync
from seglab.remote.connection import LinkState
from seglab.remote.files import EventChunk
from seglab.remote.manager import RemoteHosts

T = TypeVar("T")

_SETTLED = (LinkState.ONLINE, LinkState.OFFLINE, LinkState.AUTH_FAILED, LinkState.HOST_KEY_REFUSED)


class RemoteUnavailable(UnavailableError):
    """A remote host that cannot be used now; the message says why (state and reason)."""


class RemoteBridge:
    """Remote hosts for synchronous code, on ``loop``; :meth:`close` disconnects."""

    def __init__(
        self, inventory: Inventory, loop: LoopThread, connect_timeout: float = 20.0
    ) -> None:
        self.loop = loop
        self.remotes = RemoteHosts(inventory)
        self.connect_timeout = connect_timeout
        self._closed = False

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return self.loop.call(coro, timeout)

    def ensure(self, name: str) -> None:
        """Connect to ``name`` (once) and wait until it is online and its forward is up."""
        if name not in self.remotes.started:
            self.call(self.remotes.start([name]))
        connection = self.remotes.connection(name)
        try:
            status = self.call(connection.wait_for(*_SETTLED, timeout=self.connect_timeout))
        except asyncio.TimeoutError:
            status = self.remotes.state(name)
        if status.state is not LinkState.ONLINE:
            raise RemoteUnavailable(f"host {name} is {status.state.value}: {status.message}")
        try:
            self.call(self.remotes.machine(name).docker_ready())
        except CommandError as exc:
            raise RemoteUnavailable(str(exc)) from exc

    def machine(self, name: str) -> MachineSync:
        """Host ``name`` as a machine for synchronous code (connected on first use)."""
        return MachineSync(self.remotes.machine(name), self.loop)

    def docker_url(self, name: str) -> str:
        """``unix://`` URL of the local socket forwarding ``name``'s Docker engine."""
        self.ensure(name)
        return self.remotes.machine(name).docker_url

    def run(self, name: str, argv: Sequence[str], timeout: float = 60.0) -> CommandResult:
        """Run a short command on ``name`` (raises RemoteUnavailable when it fails)."""
        self.ensure(name)
        result = self.machine(name).run(argv, timeout=timeout)
        if result.returncode != 0:
            raise RemoteUnavailable(
                f"{name}: `{shlex.join(argv)}` exited {result.returncode}: {result.output}"
            )
        return result

    def succeeds(self, name: str, argv: Sequence[str], timeout: float = 30.0) -> bool:
        """Whether a short command on ``name`` exits 0 (a test such as ``test -d``)."""
        self.ensure(name)
        return self.machine(name).run(argv, timeout=timeout).returncode == 0

    def write_file(self, name: str, path: str, text: str) -> None:
        """Write a small text file on ``name`` (its folder is created)."""
        self.ensure(name)
        self.machine(name).write_text(path, text)

    def read_events(self, name: str, run_dir: str, offset: int) -> EventChunk:
        """New complete event lines of a remote run dir's events.jsonl from ``offset``."""
        self.ensure(name)
        return self.call(self.remotes.files(name).read_events(run_dir, offset), 60)

    def close(self) -> None:
        """Close forwards and connections (idempotent; the loop is the caller's)."""
        if self._closed:
            return
        self._closed = True
        if self.remotes.started:
            self.call(self.remotes.stop(), 30)
