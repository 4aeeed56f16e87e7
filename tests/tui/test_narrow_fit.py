"""At 80 columns the runs table keeps its host column and the footer shows whole keys only;
widening the terminal brings the full columns and more keys back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from textual.widgets._footer import FooterKey
from textual.widgets.data_table import ColumnKey

from seglab.tui.app import SeglabApp
from seglab.tui.footer import key_width
from seglab.tui.runs_table import RunsTable
from tests.tui.test_snapshots import _settled, app_factory

__all__ = ["app_factory"]  # the fixture, shared with the snapshot tests


def _columns(table: RunsTable) -> list[str]:
    return [str(key.value) for key in table.columns]


def _footer_keys(app: SeglabApp) -> list[FooterKey]:
    return list(app.screen.query(FooterKey))


def test_narrow_table_keeps_the_host_and_the_footer_keys_whole(
    app_factory: Callable[..., SeglabApp],
) -> None:
    async def main() -> None:
        app = app_factory("default")
        async with app.run_test(size=(80, 24)) as pilot:
            await _settled(pilot)
            table = app.query_one("#runs", RunsTable)
            assert _columns(table) == ["mark", "run", "status", "progress", "miou", "loss", "where"]
            assert table.columns[ColumnKey("miou")].label.plain == "mIoU"
            assert table.virtual_size.width <= table.size.width, "no sideways scrolling"
            keys = _footer_keys(app)
            assert {key.action for key in keys} >= {"help", "quit", "new_run", "stop"}
            assert all(key.region.right <= 80 for key in keys)
            assert all(key.region.width == key_width(key) for key in keys if key.description)

            await pilot.resize_terminal(150, 40)
            await pilot.pause(0.5)
            assert _columns(table) == [
                "mark",
                "run",
                "status",
                "progress",
                "miou",
                "loss",
                "ips",
                "where",
            ]
            assert table.columns[ColumnKey("miou")].label.plain == "best mIoU"
            wide = {key.action for key in _footer_keys(app)}
            assert wide >= {"compare", "shell", "follow", "search", "help", "quit"}

            await pilot.resize_terminal(80, 24)
            await pilot.pause(0.5)
            assert "ips" not in _columns(table) and "where" in _columns(table)

    asyncio.run(main())
