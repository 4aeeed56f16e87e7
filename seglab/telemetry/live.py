"""Telemetry of a set of hosts kept running on the process's one loop thread.

The workstation façade holds one :class:`LiveTelemetry` (the dashboard's live feed, the
`gpus` command, placement) so that every host's commands ride on the same machines, and
over SSH the same connections, as launches, logs and forwards. Its async methods may be
awaited from any event loop (the dashboard's, ``asyncio.run`` in a command); ``states()``
only reads the latest immutable states and is safe from any thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from seglab.machines import LoopThread, Machine
from seglab.telemetry.history import HistoryStore
from seglab.telemetry.sample import HostState, HostStatus
from seglab.telemetry.source import HostConfig, Telemetry


class LiveTelemetry:
    """One telemetry source per host; remote hosts read through ``machine(name)``."""

    def __init__(
        self,
        loop: LoopThread,
        hosts: Sequence[HostConfig],
        machine: Callable[[str], Machine],
        on_close: Callable[[LiveTelemetry], None] | None = None,
    ) -> None:
        self.hosts = list(hosts)
        self.telemetry = Telemetry()
        self.history: HistoryStore = self.telemetry.history
        self._loop = loop
        self._machine = machine
        self._on_close = on_close
        self._started = False
        self._closed = False

    async def start(self) -> None:
        """Start a source per host (returns once every source is started, not ready)."""
        if not self._started:
            self._started = True
            await self._loop.run(self._start())

    async def _start(self) -> None:
        for host in self.hosts:
            if host.is_local:
                await self.telemetry.add_host(host)
            else:
                machine = self._machine(host.name)
                await self.telemetry.add_host(host, machine, docker_url=machine.docker_url)

    def states(self) -> list[HostState]:
        """Every host's latest state."""
        return self.telemetry.states()

    def readings(self, names: Sequence[str]) -> dict[str, HostState] | None:
        """The latest state of each named host, or None unless every one has a reading
        (what placement may reuse instead of starting telemetry of its own)."""
        if not self._started or self._closed:
            return None
        found = {state.host: state for state in self.states() if state.host in names}
        if set(found) != set(names):
            return None
        if any(state.status is HostStatus.STARTING for state in found.values()):
            return None
        return found

    async def wait_ready(self, timeout: float) -> list[HostState]:
        """Wait until every host has a first reading (or a reason it has none)."""
        return await self._loop.run(self.telemetry.wait_ready(timeout))

    async def close(self) -> None:
        """Stop every source (idempotent; the connections stay with the façade)."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            await self._loop.run(self.telemetry.close())
        if self._on_close is not None:
            self._on_close(self)
