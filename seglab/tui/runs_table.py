"""The runs table: one row per run, updated cell by cell so selection and scroll stay put.

Where the full columns do not fit (80 columns), it switches to short headers and a
shorter progress bar, then leaves out img/s and loss, so the host column stays in view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
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
SHORT_LABELS = {"progress": "progress", "miou": "mIoU", "where": "host"}
DROPPABLE = ("ips", "loss")  # left out, in this order, when the short columns do not fit
BAR = {False: 6, True: 3}  # progress bar width: full, short


def cells(row: RunRow, marked: bool, short: bool = False) -> dict[str, Text | str]:
    """The table cells of one run (``short``: the narrow table's shorter progress bar)."""
    return {
        "mark": Text("●", style="bold magenta") if marked else " ",
        "run": row.run_id,
        "where": row.where,
        "status": status_text(row.status),
        "progress": (
            Text(f"queued #{row.queue_position}", style="dim")
            if row.queue_position is not None
            else progress_text(row.progress, row.eta_s, width=BAR[short])
        ),
        "loss": num(row.last_loss, ".3f"),
        "miou": num(row.best_miou, ".3f") if row.best_miou is not None else DASH,
        "ips": num(row.img_per_s, ".1f"),
    }


def shown_fields(row: RunRow) -> tuple[Any, ...]:
    """What :func:`cells` reads of a row (a row's age changes every poll, its cells not)."""
    return (
        row.run_id,
        row.where,
        row.status,
        row.queue_position,
        row.progress,
        row.eta_s,
        row.last_loss,
        row.best_miou,
        row.img_per_s,
    )


class RunsTable(DataTable[Any]):
    """Runs with status colours and progress bars; space marks runs for group actions."""

    BINDINGS = [Binding("space", "toggle_mark", "mark", show=True)]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.rows_by_id: dict[str, RunRow] = {}
        self.marked: set[str] = set()
        self._cells: dict[str, dict[str, Text | str]] = {}
        self._added = False
        self._shape: tuple[bool, tuple[str, ...]] = (False, tuple(k for k, _ in COLUMNS))
        self._shown: tuple[int, list[tuple[Any, ...]]] | None = None  # width, rows' cells

    def on_mount(self) -> None:
        """Create the columns."""
        self._add_columns()

    def _add_columns(self) -> None:
        short, keys = self._shape
        for key, label in COLUMNS:
            if key in keys:
                self.add_column(SHORT_LABELS.get(key, label) if short else label, key=key)

    def _fitting_shape(self, rows: Sequence[RunRow]) -> tuple[bool, tuple[str, ...]]:
        """Full columns if they fit the table's width, else short ones, less
        :data:`DROPPABLE` columns until they fit (or none is left to drop)."""
        width = self.size.width - 2  # room for a vertical scrollbar
        keys = [key for key, _ in COLUMNS]
        for short in (False, True):
            made = [cells(row, False, short) for row in rows]
            sizes = {
                key: 2 * self.cell_padding
                + max(
                    [cell_len(SHORT_LABELS.get(key, label) if short else label)]
                    + [cell_len(str(cell[key])) for cell in made]
                )
                for key, label in COLUMNS
            }
            if not short and sum(sizes.values()) <= width:
                return False, tuple(keys)
        for dropped in DROPPABLE:
            if sum(sizes[key] for key in keys) <= width:
                break
            keys.remove(dropped)
        return True, tuple(keys)

    def on_resize(self) -> None:
        """Fit the columns to the new width."""
        self._reshape(list(self.rows_by_id.values()))

    def _reshape(self, rows: Sequence[RunRow]) -> None:
        """Rebuild the columns (and rows) when the fitting shape changed."""
        if not self.size.width:
            return
        shape = self._fitting_shape(rows)
        if shape == self._shape:
            return
        current = self.current
        self._shape = shape
        self.clear(columns=True)
        self._add_columns()
        self._cells = {}
        self.rows_by_id = {}
        self.show_rows(rows)
        if current in self.rows_by_id:
            self.move_cursor(row=list(self.rows_by_id).index(current))

    def show_rows(self, rows: Sequence[RunRow]) -> None:
        """Bring the table to ``rows``: changed cells updated, new rows added, gone removed."""
        shown = (self.size.width, [shown_fields(row) for row in rows])
        if shown == self._shown:  # the same cells at the same width: nothing to redo
            self.rows_by_id = {row.run_id: row for row in rows}
            return
        if self.size.width and self._fitting_shape(rows) != self._shape:
            self._reshape(rows)
            return
        short, keys = self._shape
        wanted = {row.run_id: row for row in rows}
        for gone in [run_id for run_id in self.rows_by_id if run_id not in wanted]:
            self.remove_row(gone)
            self._cells.pop(gone, None)
            self.marked.discard(gone)
        for run_id, row in wanted.items():
            new = cells(row, run_id in self.marked, short)
            old = self._cells.get(run_id)
            if old is None:
                self.add_row(*(new[key] for key, _ in COLUMNS if key in keys), key=run_id)
                self._added = True
            else:
                for key, value in new.items():
                    if key not in keys:
                        continue
                    if old[key] != value or _style(old[key]) != _style(value):
                        self.update_cell(run_id, key, value)
            self._cells[run_id] = new
        self.rows_by_id = wanted
        self._shown = shown

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
