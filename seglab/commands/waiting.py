"""`seglab run --wait`: live progress of the submitted runs, then a summary with next steps.

On a terminal each run has one line redrawn in place (a bar, iteration, loss, img/s, ETA);
otherwise a plain line is printed when a run's status changes, at each evaluation, and at
most every ``PLAIN_EVERY_S`` seconds in between, so a log file stays readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from seglab.registry import RunStatus

if TYPE_CHECKING:
    from seglab.views import RunRow
    from seglab.workstation import Workstation

POLL_S = 2.0
PLAIN_EVERY_S = 30.0
BAR_WIDTH = 20


def clock(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03`` for a duration, ``-`` when unknown."""
    if seconds is None:
        return "-"
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def phase(row: RunRow) -> str:
    """What the run is doing now, in words."""
    if row.status is RunStatus.RUNNING and row.iteration is None:
        return "starting the trainer"
    if (
        row.status is RunStatus.RUNNING
        and row.total_iterations
        and row.iteration is not None
        and row.iteration >= row.total_iterations
    ):
        return "final evaluation, checkpoints and exports"
    return str(row.status)


def progress_text(row: RunRow) -> str:
    """One run's progress: iteration, loss, best mIoU, img/s, ETA (only what is known)."""
    parts = [phase(row)]
    if row.iteration is not None:
        total = row.total_iterations or "?"
        parts.append(f"iter {row.iteration}/{total}")
    if row.last_loss is not None:
        parts.append(f"loss {row.last_loss:.4f}")
    if row.best_miou is not None:
        parts.append(f"best mIoU {row.best_miou:.4f}")
    if row.img_per_s is not None:
        parts.append(f"{row.img_per_s:.1f} img/s")
    if row.eta_s is not None and not row.ended and parts[0] == str(row.status):
        parts.append(f"ETA {clock(row.eta_s)}")
    return " · ".join(parts)


def bar(fraction: float | None, width: int = BAR_WIDTH) -> str:
    """A text progress bar (``█`` done, ``░`` to go)."""
    done = round(max(0.0, min(1.0, fraction or 0.0)) * width)
    return "█" * done + "░" * (width - done)


class Progress:
    """Draws the runs' progress on ``out``: in place on a terminal, plain lines elsewhere."""

    def __init__(self, out: TextIO, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self._drawn = 0
        self._last: dict[str, tuple[str, float, float | None]] = {}

    def update(self, rows: Sequence[RunRow], now: float | None = None) -> None:
        """Show the current state of ``rows``."""
        if self.tty:
            self._redraw(rows)
        else:
            self._plain(rows, time.monotonic() if now is None else now)

    def _redraw(self, rows: Sequence[RunRow]) -> None:
        width = max(len(r.run_id) for r in rows)
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F")  # back to the first line drawn
        for row in rows:
            pct = "" if row.progress is None else f"{row.progress:4.0%} "
            line = f"{row.run_id:<{width}} {bar(row.progress)} {pct}{progress_text(row)}"
            self.out.write(f"\x1b[2K{line}\n")
        self._drawn = len(rows)
        self.out.flush()

    def _plain(self, rows: Sequence[RunRow], now: float) -> None:
        for row in rows:
            state = (str(row.status), now, row.best_miou)
            seen = self._last.get(row.run_id)
            if (
                seen is None
                or seen[0] != state[0]  # a new status
                or seen[2] != state[2]  # an evaluation moved the best mIoU
                or now - seen[1] >= PLAIN_EVERY_S
            ):
                print(f"{row.run_id}: {progress_text(row)}", file=self.out, flush=True)
                self._last[row.run_id] = state


def summary(ws: Workstation, rows: Sequence[RunRow], out: TextIO) -> None:
    """Each run's outcome, where its files are, and the commands to look further."""
    print("", file=out)
    for row in rows:
        miou = "-" if row.best_miou is None else f"{row.best_miou:.4f}"
        print(f"{row.run_id}: {row.status}, best mIoU {miou}", file=out)
        if row.message and row.status is not RunStatus.FINISHED:
            print(f"  {row.message.splitlines()[-1]}", file=out)
        if row.run_dir:
            print(f"  run dir  {row.run_dir}", file=out)
        for export in ws.run_exports(row.run_id):
            print(f"  export   {export}", file=out)
    first = rows[0].run_id
    print("next:", file=out)
    print(f"  seglab metrics {first}      evaluation history, per-class IoU", file=out)
    print(f"  seglab show {first}         provenance and where the checkpoints are", file=out)
    if len(rows) > 1:
        print(f"  seglab report {rows[0].recipe}   the grid side by side (HTML)", file=out)
    print(f"  seglab pull {first} --what export   copy the exports here", file=out)


def wait(ws: Workstation, ids: Sequence[str], out: TextIO = sys.stderr) -> list[RunRow]:
    """Keep starting queued runs and refreshing until every run in ``ids`` has ended."""
    progress = Progress(out)
    while True:
        rows = ws.watch(ids)
        progress.update(rows)
        if all(row.ended for row in rows):
            break
        time.sleep(POLL_S)
    summary(ws, rows, out)
    return rows
