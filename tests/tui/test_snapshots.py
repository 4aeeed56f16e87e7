"""Snapshots of the main screens at fixed sizes, on replayed telemetry and seeded runs.

Update after an intended change with ``pytest tests/tui/test_snapshots.py --snapshot-update``
and review the SVGs under ``__snapshots__``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.binding import Binding
from textual.pilot import Pilot
from textual.widgets import Button, SelectionList
from textual.widgets.data_table import ColumnKey

from seglab.tui.app import SeglabApp
from seglab.tui.feeds import FixedFeed, Links
from seglab.tui.log_pane import LogPane
from seglab.tui.metrics_chart import MetricsChart
from seglab.tui.new_run import NewRunScreen
from seglab.tui.runs_table import RunsTable
from seglab.tui.screens import HelpScreen
from seglab.workstation import Workstation
from tests.tui.pilotlib import wait_until
from tests.tui.replay import RECIPES, T0, TRAIN_LOG, replayed_states, seed_runs

Snap = Callable[..., bool]


@pytest.fixture
def app_factory(monkeypatch: pytest.MonkeyPatch) -> Callable[..., SeglabApp]:
    """A dashboard over seeded runs and replayed GPUs, with a fixed clock and no engine."""
    # No Docker engine: runs left on a shared engine by other tests must not show up.
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/seglab-snapshot.sock")
    states, history = replayed_states()
    ws = Workstation()
    seed_runs(ws)

    def make(layout: str, recipe_folder: Path | None = RECIPES) -> SeglabApp:
        links: Links = {"lab1": ("online", None), "cpubox": ("online", None)}
        feed = FixedFeed(states, history, links=links)
        return SeglabApp(
            ws,
            layout=layout,
            feed=feed,
            clock=lambda: T0,
            follow_logs=False,
            recipe_folder=recipe_folder,
        )

    return make


async def _settled(pilot: Pilot[Any]) -> None:
    """Wait for the first runs poll, then put a fixed log into the pane."""
    app = pilot.app
    runs = app.query_one("#runs", RunsTable)
    chart = app.query_one("#metrics", MetricsChart)
    longest = len("tiny-grid.lr-high.d4e5f6")
    for _ in range(200):  # rows in, column widths computed, chart drawn
        if (
            runs.row_count == 3
            and chart.shown
            and runs.columns[ColumnKey("run")].content_width >= longest
        ):
            break
        await pilot.pause(0.05)
    await pilot.pause(0.5)  # the table re-measures its columns when idle
    app.query_one("#logpane", LogPane).feed(TRAIN_LOG)
    await pilot.pause(0.5)


def test_dashboard(snap_compare: Snap, app_factory: Callable[..., SeglabApp]) -> None:
    assert snap_compare(app_factory("default"), terminal_size=(150, 45), run_before=_settled)


def test_compact_layout_at_80x24(snap_compare: Snap, app_factory: Callable[..., SeglabApp]) -> None:
    assert snap_compare(app_factory("compact"), terminal_size=(80, 24), run_before=_settled)


def test_wide_layout(snap_compare: Snap, app_factory: Callable[..., SeglabApp]) -> None:
    assert snap_compare(app_factory("wide"), terminal_size=(210, 50), run_before=_settled)


def test_new_run_dialog(snap_compare: Snap, app_factory: Callable[..., SeglabApp]) -> None:
    async def open_dialog(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        await pilot.press("n")
        for _ in range(200):
            screen = pilot.app.screen
            if (
                screen.query("#variants")
                and screen.query_one("#variants", SelectionList).option_count
            ):
                break
            await pilot.pause(0.05)
        screen = pilot.app.screen
        assert isinstance(screen, NewRunScreen)
        names = [path.stem for path in screen.files]
        for _ in range(names.index("synthetic-smoke-ablation")):
            await pilot.press("down")
        for _ in range(200):
            if screen.query_one("#variants", SelectionList).option_count > 1:
                break
            await pilot.pause(0.05)
        await pilot.pause(0.2)

    # Shipped recipes only: a folder's absolute path would differ between checkouts.
    assert snap_compare(
        app_factory("default", recipe_folder=None), terminal_size=(120, 40), run_before=open_dialog
    )


def test_comparison_table(snap_compare: Snap, app_factory: Callable[..., SeglabApp]) -> None:
    async def compare(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        await pilot.press("c")
        for _ in range(200):
            if pilot.app.screen.query("#compare"):
                break
            await pilot.pause(0.05)
        await pilot.pause(0.2)

    assert snap_compare(app_factory("default"), terminal_size=(120, 30), run_before=compare)


# -- 80x24: everything the dashboard does fits or scrolls into view -----------------------


def test_default_layout_at_80x24(snap_compare: Snap, app_factory: Callable[..., SeglabApp]) -> None:
    assert snap_compare(app_factory("default"), terminal_size=(80, 24), run_before=_settled)


def test_new_run_launch_reachable_at_80x24(
    snap_compare: Snap, app_factory: Callable[..., SeglabApp]
) -> None:
    """Tab walks the dialog down to the Launch button, which scrolls into view."""

    async def tab_to_launch(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        await pilot.press("n")
        screen = await wait_until(
            pilot,
            lambda: (
                isinstance(pilot.app.screen, NewRunScreen)
                and pilot.app.screen.query_one("#variants", SelectionList).option_count
                and pilot.app.screen
            ),
            10,
            "the new-run dialog with a recipe loaded",
        )
        for _ in range(12):
            focused = pilot.app.focused
            if isinstance(focused, Button) and focused.id == "launch":
                break
            await pilot.press("tab")
        launch = screen.query_one("#launch", Button)
        assert pilot.app.focused is launch
        await pilot.pause(0.3)  # the scroll to the focused button is animated
        assert launch.region.bottom <= screen.query_one("#new-run").region.bottom

    assert snap_compare(
        app_factory("compact", recipe_folder=None), terminal_size=(80, 24), run_before=tab_to_launch
    )


def test_help_scrolls_to_its_end_at_80x24(
    snap_compare: Snap, app_factory: Callable[..., SeglabApp]
) -> None:
    """The whole help is reachable: scrolled to its end it shows `q` and how to close."""

    async def help_end(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen), 10, "the help")
        await pilot.press("end")
        await pilot.pause(0.3)
        scroller = pilot.app.screen.query_one("#help")
        assert 0 < scroller.max_scroll_y == scroller.scroll_y  # it did scroll, to the end

    assert snap_compare(app_factory("compact"), terminal_size=(80, 24), run_before=help_end)


def test_comparison_at_80x24(snap_compare: Snap, app_factory: Callable[..., SeglabApp]) -> None:
    async def compare(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        await pilot.press("c")
        await wait_until(pilot, lambda: pilot.app.screen.query("#compare"), 10, "the comparison")
        await pilot.pause(0.2)

    assert snap_compare(app_factory("compact"), terminal_size=(80, 24), run_before=compare)


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
@pytest.mark.parametrize("layout", ["default", "compact"])
def test_small_terminals_reach_launch_help_and_every_action(
    app_factory: Callable[..., SeglabApp], layout: str, size: tuple[int, int]
) -> None:
    """What 120x34 offers is reachable: Launch by tab, the help's end by scrolling, and
    every footer key by name in the command palette."""

    async def main() -> None:
        app = app_factory(layout, recipe_folder=None)
        async with app.run_test(size=size) as pilot:
            await _settled(pilot)
            titles = {command.title for command in app.get_system_commands(app.screen)}
            for binding in SeglabApp.BINDINGS:
                assert isinstance(binding, Binding)
                if binding.action != "quit":
                    assert f"{binding.description} ({app.get_key_display(binding)})" in titles
            await pilot.press("n")
            screen = await wait_until(
                pilot, lambda: isinstance(app.screen, NewRunScreen) and app.screen, 10, "new run"
            )
            for _ in range(12):
                if app.focused is screen.query_one("#launch"):
                    break
                await pilot.press("tab")
            await pilot.pause(0.3)
            dialog = screen.query_one("#new-run").region
            launch = screen.query_one("#launch").region
            assert app.focused is screen.query_one("#launch")
            assert dialog.y <= launch.y and launch.bottom <= dialog.bottom
            await pilot.press("escape")
            await pilot.press("question_mark")
            await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), 10, "the help")
            await pilot.press("end")
            await pilot.pause(0.3)
            scroller = app.screen.query_one("#help")
            assert scroller.scroll_y == scroller.max_scroll_y
            assert scroller.max_scroll_y > 0 or size != (80, 24)

    asyncio.run(main())
