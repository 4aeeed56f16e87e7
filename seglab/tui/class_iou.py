"""`i`: per-class IoU of the selected run or of an ablation's variants as a heat table.

Rows are classes, worst first (by their lowest IoU over the variants); columns are
variants; each cell is coloured from red (0) through yellow to green (1), the IoU of the
run's best evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.style import Style
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from seglab.errors import SeglabError
from seglab.views import Comparison

if TYPE_CHECKING:
    from seglab.workstation import Workstation

DASH = "-"


def heat_style(iou: float) -> Style:
    """Black text on red (0) through yellow (0.5) to green (1)."""
    value = max(0.0, min(1.0, iou))
    red = 220 if value < 0.5 else round(220 * (1 - value) * 2)
    green = round(200 * value * 2) if value < 0.5 else 200
    return Style(color="black", bgcolor=f"rgb({red},{green},60)")


def heat_rows(
    rows: Sequence[Comparison], class_names: Sequence[str] | None
) -> tuple[list[str], list[list[Text]]]:
    """Header (class, then one column per variant) and cells, the worst classes first."""
    width = max((len(r.per_class_iou) for r in rows), default=0)
    names = list(class_names or [])[:width]
    names += [str(i) for i in range(len(names), width)]

    def value(row: Comparison, index: int) -> float | None:
        return row.per_class_iou[index] if index < len(row.per_class_iou) else None

    def lowest(index: int) -> float:
        return min((value(r, index) or 0.0 for r in rows), default=0.0)

    body = []
    for index in sorted(range(width), key=lowest):
        line = [Text(names[index])]
        for row in rows:
            iou = value(row, index)
            if iou is None:
                line.append(Text(DASH, style="dim", justify="right"))
            else:
                line.append(Text(f"{100 * iou:5.1f}", style=heat_style(iou), justify="right"))
        body.append(line)
    return ["class", *(r.variant or r.run_id for r in rows)], body


class ClassIouScreen(ModalScreen[None]):
    """Per-class IoU, classes x variants, coloured by IoU, worst classes first."""

    BINDINGS = [Binding("escape,q,i", "dismiss", "close")]

    DEFAULT_CSS = """
    ClassIouScreen #class-iou { height: auto; max-height: 30; }
    """

    def __init__(self, workstation: Workstation, run_ids: Sequence[str], now: float) -> None:
        super().__init__()
        self.workstation = workstation
        self.run_ids = list(run_ids)
        self.now = now

    def compose(self) -> ComposeResult:
        """Title, table, hint."""
        with Vertical(classes="dialog"):
            yield Static(Text("per-class IoU: loading…", style="bold"), id="class-iou-title")
            yield DataTable(id="class-iou", cursor_type="row", zebra_stripes=False)
            yield Static("IoU % of each run's best evaluation · escape closes", classes="hint")

    def on_mount(self) -> None:
        """Read the runs' best evaluations."""
        self._load()

    @work(thread=True, exclusive=True, group="class-iou")
    def _load(self) -> None:
        try:
            rows = self.workstation.comparison(self.run_ids, now=self.now)
            names = self.workstation.class_names(self.run_ids[0])
        except SeglabError as exc:  # e.g. a run removed meanwhile
            self.app.call_from_thread(self._title, f"per-class IoU: {exc}")
            return
        self.app.call_from_thread(self._fill, rows, names)

    def _title(self, text: str) -> None:
        self.query_one("#class-iou-title", Static).update(Text(text, style="bold"))

    def _fill(self, rows: Sequence[Comparison], names: Sequence[str] | None) -> None:
        self._title(f"per-class IoU: {len(rows)} run(s), worst classes first")
        table = self.query_one("#class-iou", DataTable)
        header, body = heat_rows(rows, names)
        for label in header:
            table.add_column(label)
        for line in body:
            table.add_row(*line)

    async def action_dismiss(self, result: None = None) -> None:
        """Close."""
        self.dismiss(result)
