"""Where the dashboard's host states come from: live telemetry, or fixed states (snapshots).

Both run inside the app's event loop: the live feed starts one telemetry source per host
(NVML probes and the Docker SDK go to threads inside telemetry) and the SSH connections of
remote hosts; the panel reads ``states()`` once a second.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # imported when used: the first frame must not wait for asyncssh & co.
    from seglab.hosts import Inventory
    from seglab.remote.manager import RemoteHosts
    from seglab.telemetry.history import HistoryStore
    from seglab.telemetry.sample import HostState

log = logging.getLogger(__name__)

Links = dict[str, tuple[str, str | None]]


class StatesFeed(Protocol):
    """Host states and SSH link states for the hosts panel."""

    history: HistoryStore | None

    async def start(self) -> None:
        """Begin reading (returns once every source is started, not ready)."""

    def states(self) -> list[HostState]:
        """The latest state of every host."""

    def links(self) -> Links:
        """Remote hosts' link state and message (local hosts are absent)."""

    async def close(self) -> None:
        """Stop reading."""


class LiveFeed:
    """Telemetry of every inventory host; remote ones through their SSH connection."""

    def __init__(self, inventory: Inventory) -> None:
        from seglab.telemetry.source import Telemetry

        self.inventory = inventory
        self.telemetry = Telemetry()
        self.history: HistoryStore | None = self.telemetry.history
        self.remotes: RemoteHosts | None = None

    async def start(self) -> None:
        """Connect remote hosts and start a telemetry source per host."""
        remote = [host.name for host in self.inventory if not host.is_local]
        if remote:
            from seglab.remote.manager import RemoteHosts

            self.remotes = RemoteHosts(self.inventory)
            await self.remotes.start(remote)
        for host in self.inventory:
            if host.is_local or self.remotes is None:
                await self.telemetry.add_host(host)
            else:
                await self.telemetry.add_host(
                    host,
                    executor=self.remotes.executor(host.name),
                    docker_url=f"unix://{self.remotes.docker_socket(host.name)}",
                )

    def states(self) -> list[HostState]:
        """Every host's current state."""
        return self.telemetry.states()

    def links(self) -> Links:
        """Link state of each remote host."""
        if self.remotes is None:
            return {}
        out: Links = {}
        for name in self.remotes.names:
            status = self.remotes.state(name)
            out[name] = (status.state.value, status.message)
        return out

    async def close(self) -> None:
        """Stop telemetry and close the SSH connections."""
        await self.telemetry.close()
        if self.remotes is not None:
            await self.remotes.stop()


class FixedFeed:
    """States that never change (snapshot tests, the load benchmark replaces them)."""

    def __init__(
        self,
        states: Sequence[HostState],
        history: HistoryStore | None = None,
        links: Links | None = None,
    ) -> None:
        self.current = list(states)
        self.history = history
        self._links = dict(links or {})

    async def start(self) -> None:
        """Nothing to start."""

    def states(self) -> list[HostState]:
        """The fixed states."""
        return list(self.current)

    def links(self) -> Links:
        """The fixed link states."""
        return dict(self._links)

    async def close(self) -> None:
        """Nothing to stop."""
