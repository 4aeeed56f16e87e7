"""The dashboard's poll: runs found again at first, queued runs started every few polls,
the local Docker engines checked now and then, every run refreshed each time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from seglab.views import Curves, Snapshot

if TYPE_CHECKING:
    from seglab.workstation import Workstation

PUMP_EVERY = 5  # polls between attempts to start queued runs
ENGINE_EVERY = 30  # polls between checks of the local Docker engines
MAX_CURVES = 8  # runs of the selected recipe whose curves are drawn
CURVES_EVERY = 5  # polls between loss-curve updates (a new evaluation shows at once)


class Poller:
    """Polls a workstation's runs for the dashboard (one poll at a time)."""

    def __init__(self, workstation: Workstation) -> None:
        self.workstation = workstation
        self.polls = 0
        # Per run: (best mIoU, status), the poll of the last read, and the curves read.
        self._curves: dict[str, tuple[tuple[object, ...], int, Curves]] = {}

    def poll(self, selected: str | None) -> Snapshot:
        """Every run as a row, with the curves of the selected run's recipe (the first
        run's when none is selected)."""
        ws = self.workstation
        if self.polls == 0:
            ws.find_runs()
        if self.polls % PUMP_EVERY == 0:
            ws.pump_queue()
        engines: dict[str, str] = {}
        if self.polls % ENGINE_EVERY == 0:
            for host in ws.inventory():
                engine = ws.engine(host.name)
                if engine is not None:
                    engines[host.name] = engine
        self.polls += 1
        rows = ws.runs_now(include_final=True)
        curves: list[Curves] = []
        chosen = next((r for r in rows if r.run_id == selected), rows[0] if rows else None)
        if chosen is not None:
            for row in [r for r in rows if r.recipe == chosen.recipe][-MAX_CURVES:]:
                curves.append(self._curves_of(row.run_id, (row.best_miou, row.status)))
        return Snapshot(rows, curves, engines)

    def _curves_of(self, run_id: str, key: tuple[object, ...]) -> Curves:
        """A run's curves, read again (its new events only) when an evaluation or its
        status changed, and every CURVES_EVERY polls while it trains."""
        cached = self._curves.get(run_id)
        if cached is not None and cached[0] == key and self.polls - cached[1] < CURVES_EVERY:
            return cached[2]
        curves = self.workstation.curves(run_id, cached[2] if cached else None)
        self._curves[run_id] = (key, self.polls, curves)
        return curves
