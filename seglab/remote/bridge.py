"""The SSH layer for synchronous callers: :class:`RemoteHosts` on the process's loop thread.

The run manager and the CLI are synchronous (the Docker SDK blocks); asyncssh is asyncio.
The bridge keeps every connection, forward and remote machine on the workstation's one
:class:`~seglab.machines.loop.LoopThread` and hands their results back, so a remote engine is
used through its forwarded socket exactly like the local one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from seglab.errors import UnavailableError
from seglab.hosts import Inventory
from seglab.machines import CommandError, LoopThread
from seglab.remote.connection import LinkState
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

    def close(self) -> None:
        """Close forwards and connections (idempotent; the loop is the caller's)."""
        if self._closed:
            return
        self._closed = True
        if self.remotes.started:
            self.call(self.remotes.stop(), 30)
