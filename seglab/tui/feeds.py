"""Where the dashboard's host states come from: live telemetry, or fixed states (snapshots).

The live feed is the workstation's own telemetry: it runs on the façade's loop thread over
the same machines and SSH connections as launches, logs and forwards (one connection per
remote host in the whole process); the panel reads ``states()`` once a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # imported when used: the first frame must not wait for asyncssh & co.
    from seglab.telemetry.history import HistoryStore
    from seglab.telemetry.live import LiveTelemetry
    from seglab.telemetry.sample import HostState
    from seglab.workstation import Workstation

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
    """The workstation's live telemetry of every inventory host."""

    def __init__(self, workstation: Workstation) -> None:
        self.workstation = workstation
        self.telemetry: LiveTelemetry = workstation.telemetry()
        self.history: HistoryStore | None = self.telemetry.history

    async def start(self) -> None:
        """Start a telemetry source per host (remote ones connect on first use)."""
        await self.telemetry.start()

    def states(self) -> list[HostState]:
        """Every host's current state."""
        return self.telemetry.states()

    def links(self) -> Links:
        """Link state of each remote host."""
        return self.workstation.host_links()

    async def close(self) -> None:
        """Stop telemetry (the workstation keeps its connections until it closes)."""
        await self.telemetry.close()


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
