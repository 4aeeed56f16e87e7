"""The footer: the keys that fit the terminal's width, whole, in their usual order.

Textual's footer scrolls sideways and cuts the last key that does not fit mid-word. This
one keeps the keys by priority until the next one would not fit (help, quit and the
command palette always stay: `?` lists every key and ctrl+p runs every action), so at 80
columns it shows fewer keys, each of them whole.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual import events
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

# Actions in the order they are kept when not every key fits; others come last.
PRIORITY = (
    "help",
    "quit",
    "new_run",
    "stop",
    "resume",
    "toggle_mark",
    "compare",
    "kill",
    "remove",
    "shell",
    "follow",
    "search",
)
PALETTE_RESERVE = 14  # "▏^p palette" on the right, and a column to spare


def key_width(key: FooterKey) -> int:
    """Columns a footer key takes: its key with a space each side, its description and a
    space after it."""
    return len(key.key_display) + 2 + (len(key.description) + 1 if key.description else 0)


def fitting(keys: Iterable[FooterKey], width: int) -> list[FooterKey]:
    """The keys to show in ``width`` columns, in their given order: taken by
    :data:`PRIORITY` as long as each fits (the command palette's key always)."""
    keys = list(keys)
    palette = [key for key in keys if key.has_class("-command-palette")]
    others = [key for key in keys if key not in palette]
    room = width - (PALETTE_RESERVE if palette else 0)
    rank = {action: index for index, action in enumerate(PRIORITY)}
    kept: set[int] = set()
    for key in sorted(others, key=lambda k: rank.get(k.action, len(rank))):
        if key_width(key) > room:
            continue  # a shorter key further down may still fit
        room -= key_width(key)
        kept.add(id(key))
    return [key for key in others if id(key) in kept] + palette


class KeyFooter(Footer):
    """A footer that shows whole keys only (:func:`fitting`), laid out again when the
    terminal's width changes."""

    _laid_for = 0  # the width the keys were chosen for

    def compose(self) -> ComposeResult:
        """Footer's keys, fewer when the screen is narrow."""
        widgets: list[Widget] = list(super().compose())
        self._laid_for = self.app.size.width
        shown = fitting([w for w in widgets if isinstance(w, FooterKey)], self._laid_for)
        if widgets:
            self.styles.grid_size_columns = len(shown)
        yield from (w for w in widgets if not isinstance(w, FooterKey) or w in shown)

    def on_resize(self, event: events.Resize) -> None:
        """Choose the keys again when the width changed."""
        if self._laid_for and self.app.size.width != self._laid_for:
            self.call_after_refresh(self.recompose)
