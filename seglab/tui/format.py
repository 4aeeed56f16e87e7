"""Text for the dashboard's cells: bars, sparklines, numbers with thresholds (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.cells import cell_len
from rich.text import Text

from seglab.registry import RunStatus

DASH = "\u2013"  # an en dash: "no value", never 0
SPARKS = "▁▂▃▄▅▆▇█"


def num(value: float | None, fmt: str, unit: str = "") -> str:
    """``value`` formatted, or a dash when the driver gave none (never 0)."""
    return DASH if value is None else f"{value:{fmt}}{unit}"


def level_style(value: float | None, warn: float, crit: float) -> str:
    """A colour for a value against warning / critical thresholds."""
    if value is None:
        return "dim"
    if value >= crit:
        return "bold red"
    if value >= warn:
        return "yellow"
    return "green"


def bar(fraction: float | None, width: int, style: str = "green") -> Text:
    """A horizontal bar of ``width`` cells; dotted when the value is unknown."""
    if fraction is None or math.isnan(fraction):
        return Text("·" * width, style="dim")
    filled = round(max(0.0, min(1.0, fraction)) * width)
    out = Text("█" * filled, style=style)
    out.append("░" * (width - filled), style="dim")
    return out


def sparkline(values: Sequence[float | None], width: int, top: float = 100.0) -> str:
    """The last ``width`` values as block characters scaled to ``top`` (gaps as spaces)."""
    tail = list(values)[-width:]
    cells = []
    for value in tail:
        if value is None:
            cells.append(" ")
        else:
            level = max(0.0, min(1.0, value / top)) if top > 0 else 0.0
            cells.append(SPARKS[min(len(SPARKS) - 1, int(level * len(SPARKS)))])
    return "".join(cells).rjust(width)


def clip_words(text: Text, width: int) -> Text:
    """``text`` cut to ``width`` cells with an ellipsis, at a word boundary when one lies in
    the second half (a long single word is cut where it must)."""
    if width <= 0 or cell_len(text.plain) <= width:
        return text
    keep = width - 1
    while keep > 0 and cell_len(text.plain[:keep]) > width - 1:
        keep -= 1
    space = text.plain.rfind(" ", 0, keep + 1)
    if space > keep // 2:
        keep = space
    out = text[: len(text.plain[:keep].rstrip(" ·"))]  # no separator before the ellipsis
    out.append("…", style="dim")
    return out


def duration(seconds: float | None) -> str:
    """``1h02m``, ``3m05s`` or ``42s``; a dash when unknown."""
    if seconds is None or seconds < 0:
        return DASH
    total = round(seconds)
    if total >= 3600:
        return f"{total // 3600}h{total % 3600 // 60:02d}m"
    if total >= 60:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total}s"


STATUS_STYLES = {
    RunStatus.QUEUED: "cyan",
    RunStatus.STARTING: "cyan",
    RunStatus.RUNNING: "bold green",
    RunStatus.FINISHED: "blue",
    RunStatus.STOPPED: "yellow",
    RunStatus.FAILED: "bold red",
    RunStatus.OOM_KILLED: "bold red",
    RunStatus.LOST: "magenta",
}


def status_text(status: RunStatus) -> Text:
    """A run status in its colour."""
    return Text(str(status), style=STATUS_STYLES.get(status, ""))


def progress_text(progress: float | None, eta_s: float | None, width: int = 10) -> Text:
    """A progress bar with percentage and ETA."""
    if progress is None:
        return Text(DASH, style="dim")
    out = bar(progress, width, "cyan")
    out.append(f" {progress:4.0%}")
    if eta_s is not None:
        out.append(f" {duration(eta_s)}", style="dim")
    return out
