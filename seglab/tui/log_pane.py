"""The log pane of the selected run: bounded, follow on by default, events hidden, search.

A daemon thread follows the run's log (the runtimes' iterators block) and appends lines to
a queue; the UI drains it a few times a second and writes them in one batch. Every line is
made safe (:func:`seglab.safetext.safe_line`) as it is queued: a run's output never
reaches the widget with control sequences, and colour is not kept.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Log, Static

from seglab.events import PREFIX
from seglab.safetext import safe_line

log = logging.getLogger(__name__)

MAX_LINES = 2000
FLUSH_S = 0.2  # five batched writes a second: smooth enough, half the redraws of 10

Opener = Callable[[], Iterable[str]]


class LogFollower:
    """Reads one run's lines in a daemon thread until told to stop or the log ends."""

    def __init__(
        self, open_lines: Opener, sink: Callable[[list[str]], None], on_error: Callable[[str], None]
    ) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._follow,
            args=(open_lines, sink, on_error),
            daemon=True,
            name="seglab-log-follower",
        )
        self._thread.start()

    def _follow(
        self, open_lines: Opener, sink: Callable[[list[str]], None], on_error: Callable[[str], None]
    ) -> None:
        try:
            for line in open_lines():
                if self._stop.is_set():
                    return
                sink([line])
        except Exception as exc:  # shown inline in the pane, never a traceback
            log.info("log follower ended: %s", exc)
            if not self._stop.is_set():
                on_error(str(exc))

    def stop(self) -> None:
        """Stop at the next line (the thread is a daemon: a silent log never blocks exit)."""
        self._stop.set()


class LogPane(Vertical):
    """Status line, log view, and a search box that appears with ``/``."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.follow = True
        self.show_events = False
        self.run_id: str | None = None
        self._lines: deque[str] = deque(maxlen=MAX_LINES)
        self._pending: deque[str] = deque()
        self._lock = threading.Lock()
        self._follower: LogFollower | None = None
        self._note = ""
        self._note_dirty = False
        self._search: str | None = None
        self._hit = -1

    def compose(self) -> ComposeResult:
        """Status line, log, hidden search input."""
        yield Static("", id="log-status", markup=False)
        yield Log(max_lines=MAX_LINES, auto_scroll=True, id="log")
        yield Input(placeholder="search the log (enter: next match, esc: close)", id="log-search")

    def on_mount(self) -> None:
        """Drain the queue of new lines a few times a second."""
        self.query_one("#log-search", Input).display = False
        self.set_interval(FLUSH_S, self.flush)
        self._show_status()

    # -- feeding ---------------------------------------------------------------------

    def follow_run(self, run_id: str | None, open_lines: Opener | None) -> None:
        """Show ``run_id``'s log (stops following the previous run)."""
        if self._follower is not None:
            self._follower.stop()
            self._follower = None
        self.run_id = run_id
        with self._lock:
            self._pending.clear()
        self._lines.clear()
        self._note = ""
        self.query_one("#log", Log).clear()
        if run_id is not None and open_lines is not None:
            self._follower = LogFollower(open_lines, self.feed, self.report)
        self._show_status()

    def feed(self, lines: Iterable[str]) -> None:
        """Queue lines for display, made safe to show (callable from any thread)."""
        shown = [safe_line(line) for line in lines]
        with self._lock:
            self._pending.extend(shown)

    def report(self, message: str) -> None:
        """Note why the log is not shown (safe from any thread)."""
        self._note = safe_line(message)
        self._note_dirty = True

    def flush(self) -> None:
        """Write the queued lines in one batch (only those the filter lets through)."""
        with self._lock:
            if not self._pending:
                if self._note_dirty:
                    self._note_dirty = False
                    self._show_status()
                return
            batch = list(self._pending)
            self._pending.clear()
        self._lines.extend(batch)
        shown = [line for line in batch if self._visible(line)]
        if shown:
            self.query_one("#log", Log).write_lines(shown, scroll_end=self.follow)

    def _visible(self, line: str) -> bool:
        return self.show_events or PREFIX not in line

    def _rewrite(self) -> None:
        view = self.query_one("#log", Log)
        view.clear()
        view.write_lines(
            [line for line in self._lines if self._visible(line)], scroll_end=self.follow
        )

    # -- toggles and search ----------------------------------------------------------

    def toggle_follow(self) -> None:
        """Follow mode on/off (off keeps the view where it is)."""
        self.follow = not self.follow
        view = self.query_one("#log", Log)
        view.auto_scroll = self.follow
        if self.follow:
            view.scroll_end(animate=False)
        self._show_status()

    def toggle_events(self) -> None:
        """Show or hide the trainer's @seglab event lines."""
        self.show_events = not self.show_events
        self._rewrite()
        self._show_status()

    def open_search(self) -> None:
        """Show the search box."""
        box = self.query_one("#log-search", Input)
        box.display = True
        box.focus()

    def close_search(self) -> None:
        """Hide the search box."""
        box = self.query_one("#log-search", Input)
        box.display = False
        self._search = None
        self._show_status()

    def search(self, text: str) -> int | None:
        """Scroll to the next line containing ``text`` (case-insensitive); its index."""
        view = self.query_one("#log", Log)
        lines = view.lines
        needle = text.lower()
        if needle != self._search:
            self._search, self._hit = needle, -1
        order = list(range(self._hit + 1, len(lines))) + list(range(self._hit + 1))
        for index in order:
            if needle and needle in lines[index].lower():
                self._hit = index
                if self.follow:
                    self.toggle_follow()
                view.scroll_to(y=max(0, index - 2), animate=False)
                self._show_status(f"match at line {index + 1}")
                return index
        self._show_status(f"no line contains {text!r}")
        return None

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the search box: next match."""
        event.stop()
        self.search(event.value)

    def _show_status(self, extra: str = "") -> None:
        parts = [
            self.run_id or "no run selected",
            "follow on" if self.follow else "follow off (f)",
            "events shown" if self.show_events else "events hidden (v)",
        ]
        if self._note:
            parts.append(self._note)
        if extra:
            parts.append(extra)
        self.query_one("#log-status", Static).update(" · ".join(parts))

    def lines_shown(self) -> list[str]:
        """The lines the view holds now (for tests and the benchmark)."""
        return list(self.query_one("#log", Log).lines)


def text_lines(lines: Iterator[object]) -> Iterator[str]:
    """``LogLine`` objects (anything with ``.text``) as plain strings."""
    for line in lines:
        yield str(getattr(line, "text", line))
