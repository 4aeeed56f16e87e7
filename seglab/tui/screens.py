"""Modal screens: confirmation, help, and the ablation comparison table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Static

from seglab.tui.format import DASH, duration, num

if TYPE_CHECKING:
    from seglab.views import Comparison


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; ``y``/enter confirms, ``n``/escape cancels."""

    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        """Question and two buttons."""
        with Vertical(classes="dialog"):
            yield Static(self.question, id="question")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no")

    def on_mount(self) -> None:
        """Focus the safe answer."""
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Answer with the button pressed."""
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        """Answer from the keyboard."""
        self.dismiss(yes)


KEYS = (
    ("n", "new run: recipe, variants, placement, runtime"),
    ("space", "mark / unmark the run under the cursor (actions apply to marked runs)"),
    ("s", "stop gracefully (checkpoint, exit 0) after confirming"),
    ("k", "kill now after confirming (work since the last checkpoint is lost)"),
    ("r", "resume stopped or failed runs from their last checkpoint"),
    ("x", "remove ended runs (their run dir stays)"),
    ("c", "compare the variants of the selected run's ablation"),
    ("e", "shell in the run's container (docker runs on this machine)"),
    ("j / t", "JupyterLab on the run's host / TensorBoard of the run, forwarded here"),
    ("f", "log: follow on/off"),
    ("v", "log: show/hide @seglab event lines"),
    ("/", "log: search (enter: next match, escape: close)"),
    ("ctrl+p", "command palette (every action by name)"),
    ("?", "this help"),
    ("q", "quit (runs keep going; reopening shows them again)"),
)


class HelpScreen(ModalScreen[None]):
    """The key bindings."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        """One line per key, in a scrolling dialog that says how to scroll and close."""
        text = Table.grid(padding=(0, 2))  # a wrapped description keeps its indent
        text.add_column(justify="right", style="bold cyan", no_wrap=True)
        text.add_column()
        for key, what in KEYS:
            text.add_row(key, what)
        text.add_row("", "")
        text.add_row("escape", Text("closes this help", style="dim"))
        with VerticalScroll(classes="dialog", id="help") as dialog:
            dialog.border_title = "seglab keys"
            dialog.border_subtitle = "↑↓ pgup pgdn scroll · escape closes"
            yield Static(text, id="help-text")

    def on_mount(self) -> None:
        """Focus the text's scroller, so that the arrow keys scroll it."""
        self.query_one("#help", VerticalScroll).focus()

    async def action_dismiss(self, result: None = None) -> None:
        """Close."""
        self.dismiss(result)


def comparison_table(
    rows: Sequence[Comparison], class_names: Sequence[str] | None
) -> tuple[list[str], list[list[Text]]]:
    """Header and cells of the comparison; the best value of each column in bold green."""
    width = max((len(r.per_class_iou) for r in rows), default=0)
    names = list(class_names or [])[:width] + [str(i) for i in range(len(class_names or []), width)]
    header = ["variant", "status", "best mIoU", "pixel acc", *names, "img/s", "time"]
    columns: list[list[float | None]] = [
        [r.best_miou for r in rows],
        [r.pixel_acc for r in rows],
        *[
            [r.per_class_iou[i] if i < len(r.per_class_iou) else None for r in rows]
            for i in range(width)
        ],
        [r.img_per_s for r in rows],
        [r.time_s for r in rows],
    ]
    # Higher is better everywhere except time.
    best = [max((v for v in col if v is not None), default=None) for col in columns[:-1]]
    best.append(min((v for v in columns[-1] if v is not None), default=None))
    body: list[list[Text]] = []
    for i, row in enumerate(rows):
        line = [Text(row.variant or row.run_id), Text(str(row.status))]
        for c, col in enumerate(columns):
            value = col[i]
            if value is None:
                line.append(Text(DASH, style="dim"))
                continue
            last = c == len(columns) - 1
            shown = (
                duration(value) if last else num(value, ".1f" if c == len(columns) - 2 else ".3f")
            )
            top = best[c] is not None and value == best[c] and len(rows) > 1
            line.append(Text(shown, style="bold green" if top else ""))
        body.append(line)
    return header, body


class CompareScreen(ModalScreen[None]):
    """Variants of an ablation side by side."""

    BINDINGS = [
        Binding("escape,q,c", "dismiss", "close"),
        Binding("p", "samples", "samples side by side"),
    ]

    def __init__(
        self, title: str, rows: Sequence[Comparison], class_names: Sequence[str] | None
    ) -> None:
        super().__init__()
        self.title_text = title
        self.rows = rows
        self.class_names = class_names

    def compose(self) -> ComposeResult:
        """The table, titled, with the hint in its border (it scrolls when it does not fit)."""
        table: DataTable[Text] = DataTable(
            id="compare", cursor_type="row", classes="dialog wide-dialog"
        )
        table.border_title = self.title_text
        table.border_subtitle = "best value per column in green · arrows scroll · escape closes"
        yield table

    def on_mount(self) -> None:
        """Fill the table."""
        table: DataTable[Text] = self.query_one("#compare", DataTable)
        header, body = comparison_table(self.rows, self.class_names)
        for label in header:
            table.add_column(label)
        for line in body:
            table.add_row(*line)

    async def action_dismiss(self, result: None = None) -> None:
        """Close."""
        self.dismiss(result)

    def action_samples(self) -> None:
        """The same prediction sample across these runs, side by side (docs/report.md)."""
        from seglab.tui.preview import compare_samples  # images: imported when opened

        runs = [(row.run_id, row.variant) for row in self.rows]
        self.app.push_screen(compare_samples(self.app, runs))
