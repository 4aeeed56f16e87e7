"""Helpers for Pilot tests of the dashboard."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any

from textual.css.query import NoMatches
from textual.pilot import Pilot

from seglab.tui.hosts_panel import HostsPanel
from seglab.tui.runs_table import RunsTable


async def wait_until(
    pilot: Pilot[Any], predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.1
) -> Any:
    """Let the app run until ``predicate()`` is truthy; its value, or AssertionError.

    A widget the predicate queries may not be mounted yet (the main screen composes after
    the app starts): that counts as "not yet"."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except NoMatches:
            last = None
        if last:
            return last
        await pilot.pause(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def hosts_text(pilot: Pilot[Any]) -> str:
    """The hosts panel as plain text."""
    panel = pilot.app.query_one("#hosts", HostsPanel)
    return str(panel.render())


def table(pilot: Pilot[Any]) -> RunsTable:
    """The runs table."""
    return pilot.app.query_one("#runs", RunsTable)


async def select_run(pilot: Pilot[Any], run_id: str) -> None:
    """Move the cursor onto ``run_id``'s row with the arrow keys."""
    runs = table(pilot)
    runs.focus()
    order = list(runs.rows_by_id)
    target = order.index(run_id)
    while runs.cursor_row != target:
        await pilot.press("down" if runs.cursor_row < target else "up")
    assert runs.current == run_id


def sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test function in its own event loop (no asyncio plugin needed)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper
