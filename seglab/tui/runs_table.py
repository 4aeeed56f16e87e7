"""The runs table: one row per run, updated cell by cell so selection and scroll stay put."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.widgets import DataTable

from seglab.tui.format import DASH, num, progress_text, status_text

if TYPE_CHECKING:
    from seglab.views import RunRow

COLUMNS = (
    ("mark", " "),
    ("run", "run"),
    ("status", "status"),
    ("progress", "progress / ETA"),
    ("miou", "best mIoU"),
    ("loss", "loss"),
    ("ips", "img/s"),
    ("where", "host:GPUs"),
)


def cells(row: RunRow, marked: bool) -> dict[str, Text | str]:
    """The table cells of one run."""
    return {
        "mark": Text("●", style="bold magenta") if marked else " ",
        "run": row.run_id,
        "where": row.where,
        "status": status_text(row.status),
        "progress": progress_text(row.progress, row.eta_s, width=6),
        "loss": num(row.last_loss, ".3f"),
        "miou": num(row.best_miou, ".3f") if row.best_miou is not None else DASH,
        "ips": num(row.img_per_s, ".1f"),
    }


class RunsTable(DataTable[Any]):
    """Runs with status colours and progress bars; space marks runs for group actions."""

    BINDINGS = [Binding("space", "toggle_mark", "mark", show=True)]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.rows_by_id: dict[str, RunRow] = {}
        self.marked: set[str] = set()
        self._cells: dict[str, dict[str, Text | str]] = {}
        self._added = False

    def on_mount(self) -> None:
        """Create the columns once."""
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show_rows(self, rows: Sequence[RunRow]) -> None:
        """Bring the table to ``rows``: changed cells updated, new rows added, gone removed."""
        wanted = {row.run_id: row for row in rows}
        for gone in [run_id for run_id in self.rows_by_id if run_id not in wanted]:
            self.remove_row(gone)
            self._cells.pop(gone, None)
            self.marked.discard(gone)
        for run_id, row in wanted.items():
            new = cells(row, run_id in self.marked)
            old = self._cells.get(run_id)
            if old is None:
                self.add_row(*(new[key] for key, _ in COLUMNS), key=run_id)
                self._added = True
            else:
                for key, value in new.items():
                    if old[key] != value or _style(old[key]) != _style(value):
                        self.update_cell(run_id, key, value)
            self._cells[run_id] = new
        self.rows_by_id = wanted

    def on_idle(self) -> None:
        """After new rows, once the columns have been re-measured (DataTable does that
        when idle), touch one cell: rows drawn before with the old widths are redrawn."""
        if self._added and self.rows_by_id:
            self._added = False
            run_id = next(iter(self.rows_by_id))
            self.update_cell(run_id, "mark", self._cells[run_id]["mark"])

    @property
    def current(self) -> str | None:
        """The run under the cursor."""
        if not self.rows_by_id or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        key = self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
        return str(key) if key is not None else None

    def chosen(self) -> list[str]:
        """The marked runs in table order, else the run under the cursor."""
        if self.marked:
            return [run_id for run_id in self.rows_by_id if run_id in self.marked]
        return [self.current] if self.current else []

    def action_toggle_mark(self) -> None:
        """Mark or unmark the run under the cursor."""
        run_id = self.current
        if run_id is None:
            return
        self.marked ^= {run_id}
        mark: Text | str = Text("●", style="bold magenta") if run_id in self.marked else " "
        self.update_cell(run_id, "mark", mark)
        self._cells[run_id]["mark"] = mark


def _style(value: Text | str) -> object:
    """A cell's base style (rich compares texts by characters and spans only)."""
    return value.style if isinstance(value, Text) else None
