"""Where the dashboard's host states come from: live telemetry, or fixed states (snapshots).

The live feed is the workstation's own telemetry: it runs on the façade's loop thread over
the same machines and SSH connections as launches, logs and forwards (one connection per
remote host in the whole process); the panel reads ``states()`` once a second (every
0.1 s until each host has its first reading). :class:`EarlyStart` begins it before the
dashboard's first frame.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # imported when used: the first frame must not wait for asyncssh & co.
    from seglab.telemetry.history import HistoryStore
    from seglab.telemetry.live import LiveTelemetry
    from seglab.telemetry.sample import HostState
    from seglab.workstation import Workstation

Links = dict[str, tuple[str, str | None]]


class EarlyStart:
    """The workstation and its live telemetry, begun in a thread before the dashboard is
    imported, so the first GPU sample is on its way while the first frame is drawn."""

    def __init__(self) -> None:
        self._workstation: Workstation | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._begin, name="seglab-early", daemon=True)
        self._thread.start()

    def _begin(self) -> None:
        from seglab.errors import ConfigurationError
        from seglab.workstation import Workstation

        try:
            workstation = Workstation()
        except Exception as exc:  # re-raised where the dashboard asks for the workstation
            self._error = exc
            return
        self._workstation = workstation
        try:
            workstation.inventory()
            asyncio.run(workstation.telemetry().start())
        except ConfigurationError:
            return  # hosts.yaml: the dashboard reads it again and shows what is wrong
        except Exception as exc:
            self._error = exc

    def workstation(self) -> Workstation:
        """The workstation (waits for the thread; re-raises what stopped it)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._workstation is not None
        return self._workstation


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
