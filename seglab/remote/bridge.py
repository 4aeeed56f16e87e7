"""The SSH layer for synchronous callers: :class:`RemoteHosts` on a loop of its own thread.

The run manager and the CLI are synchronous (the Docker SDK blocks); asyncssh is asyncio.
The bridge runs the connections, forwards and executors on one event loop in a daemon
thread and hands their results back, so a remote engine is used through its forwarded
socket exactly like the local one.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import shlex
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from seglab.errors import UnavailableError
from seglab.hosts import Inventory
from seglab.remote.connection import LinkState
from seglab.remote.files import EventChunk
from seglab.remote.manager import RemoteHosts
from seglab.telemetry.executor import CommandResult

T = TypeVar("T")

_SETTLED = (LinkState.ONLINE, LinkState.OFFLINE, LinkState.AUTH_FAILED, LinkState.HOST_KEY_REFUSED)


class RemoteUnavailable(UnavailableError):
    """A remote host that cannot be used now; the message says why (state and reason)."""


class RemoteBridge:
    """Remote hosts for synchronous code; :meth:`close` (also run at exit) disconnects."""

    def __init__(self, inventory: Inventory, connect_timeout: float = 20.0) -> None:
        self.remotes = RemoteHosts(inventory)
        self.connect_timeout = connect_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="seglab-ssh", daemon=True
        )
        self._thread.start()
        self._started: set[str] = set()
        self._closed = False
        atexit.register(self.close)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the bridge's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def ensure(self, name: str) -> None:
        """Connect to ``name`` (once) and wait until it is online and its forward is up."""
        if name not in self._started:
            self.call(self.remotes.start([name]))
            self._started.add(name)
        connection = self.remotes.connection(name)
        try:
            status = self.call(connection.wait_for(*_SETTLED, timeout=self.connect_timeout))
        except TimeoutError:
            status = self.remotes.state(name)
        if status.state is not LinkState.ONLINE:
            raise RemoteUnavailable(f"host {name} is {status.state.value}: {status.message}")
        self.call(self._forward_up(name))

    async def _forward_up(self, name: str) -> None:
        socket = self.remotes.docker_socket(name)
        for _ in range(100):
            if socket.exists():
                return
            await asyncio.sleep(0.05)
        raise RemoteUnavailable(f"host {name}: the Docker socket forward did not come up")

    def docker_url(self, name: str) -> str:
        """``unix://`` URL of the local socket forwarding ``name``'s Docker engine."""
        self.ensure(name)
        return f"unix://{self.remotes.docker_socket(name)}"

    def run(self, name: str, argv: Sequence[str], timeout: float = 60.0) -> CommandResult:
        """Run a short command on ``name`` (raises RemoteUnavailable when it fails)."""
        self.ensure(name)
        result = self.call(self.remotes.executor(name).run(argv, timeout), timeout + 10)
        if result.returncode != 0:
            raise RemoteUnavailable(
                f"{name}: `{shlex.join(argv)}` exited {result.returncode}:"
                f" {result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def execute(
        self, name: str, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0
    ) -> CommandResult:
        """Run a command on ``name`` and return how it went, whatever its exit status."""
        self.ensure(name)
        return self.call(self.remotes.executor(name).run(argv, timeout, stdin), timeout + 10)

    def succeeds(self, name: str, argv: Sequence[str], timeout: float = 30.0) -> bool:
        """Whether a short command on ``name`` exits 0 (a test such as ``test -d``)."""
        self.ensure(name)
        result = self.call(self.remotes.executor(name).run(argv, timeout), timeout + 10)
        return result.returncode == 0

    def write_file(self, name: str, path: str, text: str) -> None:
        """Write a small text file on ``name`` (its folder is created)."""
        blob = base64.b64encode(text.encode()).decode()
        quoted = shlex.quote(path)
        self.run(
            name,
            [
                "sh",
                "-c",
                f'mkdir -p "$(dirname {quoted})" && printf %s {blob} | base64 -d > {quoted}',
            ],
        )

    def read_events(self, name: str, run_dir: str, offset: int) -> EventChunk:
        """New complete event lines of a remote run dir's events.jsonl from ``offset``."""
        self.ensure(name)
        return self.call(self.remotes.files(name).read_events(run_dir, offset), 60)

    def close(self) -> None:
        """Close forwards and connections and stop the loop (idempotent)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if self._started:
            self.call(self.remotes.stop(), 30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
