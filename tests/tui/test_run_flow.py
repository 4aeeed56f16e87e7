"""The `n` flow against the real runtimes and trainer: runs appear at once, progress, log,
rising mIoU; `s` stops one; a new app instance finds the same runs."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Select

from seglab.events import stop_exit_status
from seglab.kinds import RuntimeKind
from seglab.registry import RunStatus
from seglab.tui.app import SeglabApp
from seglab.tui.log_pane import LogPane
from seglab.tui.metrics_chart import MetricsChart
from seglab.tui.new_run import NewRunScreen
from seglab.tui.screens import ConfirmScreen
from seglab.views import RunRow
from tests.tui.pilotlib import select_run, sync, table, wait_until
from tests.tui.replay import RECIPES, REPO

pytestmark = pytest.mark.slow

ACTIVE = (RunStatus.QUEUED, RunStatus.STARTING, RunStatus.RUNNING)


async def launch(pilot: Pilot[Any], recipe: str, runtime: str) -> list[str]:
    """Press n, pick ``recipe`` with the arrow keys, place it on local:cpu, launch."""
    app = pilot.app
    before = set(table(pilot).rows_by_id)
    await pilot.press("n")
    screen = await wait_until(
        pilot, lambda: isinstance(app.screen, NewRunScreen) and app.screen, 10, "the new-run dialog"
    )
    names = [path.stem for path in screen.files]
    for _ in range(names.index(recipe)):
        await pilot.press("down")
    await wait_until(
        pilot,
        lambda: (
            screen.recipe is not None
            and screen.recipe_path is not None
            and screen.recipe_path.stem == recipe
        ),
        30,
        f"{recipe} to load",
    )
    screen.query_one("#placement-custom", Input).focus()
    for key in "local:cpu":
        await pilot.press(key)
    screen.query_one("#runtime", Select).value = runtime
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: not isinstance(app.screen, NewRunScreen), 120, "the launch")
    # The new runs are in the table at once, before the next poll.
    new = [run_id for run_id in table(pilot).rows_by_id if run_id not in before]
    assert new, "the launched runs appear at once"
    for run_id in new:
        assert table(pilot).rows_by_id[run_id].status in ACTIVE
    return new


def row(pilot: Pilot[Any], run_id: str) -> RunRow:
    """The run's current row in the table."""
    return table(pilot).rows_by_id[run_id]


@sync
async def test_new_run_progress_log_miou_stop_and_reopen() -> None:
    app = SeglabApp(poll_s=0.5, recipe_folder=RECIPES)
    async with app.run_test(size=(150, 45)) as pilot:
        (tiny,) = await launch(pilot, "tiny", "process")
        (long,) = await launch(pilot, "tiny-long", "process")
        assert row(pilot, long).runtime == RuntimeKind.PROCESS

        # s stops the long run once it trains: confirm, graceful stop, status stopped.
        await wait_until(
            pilot, lambda: (row(pilot, long).iteration or 0) >= 1, 240, "the long run to train"
        )
        await select_run(pilot, long)
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_until(
            pilot, lambda: row(pilot, long).status == RunStatus.STOPPED, 120, "the stop"
        )
        assert row(pilot, long).exit_code == stop_exit_status(signal.SIGTERM)  # 143: clean

        # The tiny run progresses to the end with a log and a rising mIoU.
        await select_run(pilot, tiny)
        seen: set[int] = set()

        def progressed() -> bool:
            seen.add(row(pilot, tiny).iteration or 0)
            return bool(row(pilot, tiny).status == RunStatus.FINISHED)

        await wait_until(pilot, progressed, 300, "the tiny run to finish", step=0.3)
        assert len(seen - {0}) >= 2, f"progress was seen along the way: {sorted(seen)}"
        final = row(pilot, tiny)
        assert final.iteration == final.total_iterations == 8
        assert final.progress == 1.0
        assert str(table(pilot).get_cell(tiny, "miou")) == f"{final.best_miou:.3f}"

        chart = app.query_one("#metrics", MetricsChart)
        curves = await wait_until(
            pilot,
            lambda: [c for c in chart.shown if c.run_id == tiny and len(c.miou) == 2],
            30,
            "both evals",
        )
        miou = curves[0].miou
        assert [it for it, _ in miou] == [4, 8]
        assert miou[1][1] > miou[0][1], f"mIoU rises: {miou}"
        assert len(curves[0].loss) == 8

        pane = app.query_one("#logpane", LogPane)
        shown = await wait_until(
            pilot,
            lambda: (
                any("eval iter 8" in line for line in pane.lines_shown()) and pane.lines_shown()
            ),
            30,
            "the log's last evaluation",
        )
        assert any(line.startswith("iter 1/8") for line in shown)
        assert not any("@seglab" in line for line in shown)
        await pilot.press("q")
    assert app.return_code == 0

    # Quitting left the runs alone; a new instance shows the same runs.
    again = SeglabApp(poll_s=0.5, follow_logs=False)
    async with again.run_test(size=(150, 45)) as pilot:
        await wait_until(pilot, lambda: table(pilot).row_count == 2, 30, "the runs again")
        assert row(pilot, tiny).status == RunStatus.FINISHED
        assert row(pilot, long).status == RunStatus.STOPPED
        await pilot.press("q")


@pytest.mark.docker
@sync
async def test_new_run_in_a_container(ci_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    site = (
        Path(sys.prefix) / "lib" / f"python{sys.version_info.major}."
        f"{sys.version_info.minor}" / "site-packages"
    )
    monkeypatch.setenv(
        "SEGLAB_DEV_MOUNTS", f"{site}:/usr/local/lib/python3.11/dist-packages,{REPO}:/opt/seglab"
    )
    app = SeglabApp(poll_s=0.5, recipe_folder=RECIPES)
    async with app.run_test(size=(150, 45)) as pilot:
        (run_id,) = await launch(pilot, "tiny-long", "docker")
        assert row(pilot, run_id).runtime == RuntimeKind.DOCKER
        await wait_until(
            pilot,
            lambda: (row(pilot, run_id).iteration or 0) >= 1,
            240,
            "the container to train",
        )
        pane = app.query_one("#logpane", LogPane)
        await wait_until(
            pilot,
            lambda: any(line.startswith("iter ") for line in pane.lines_shown()),
            60,
            "the container's log: " + str(app.query_one("#log-status").render()),
        )
        await select_run(pilot, run_id)
        await pilot.press("s", "y")
        await wait_until(
            pilot, lambda: row(pilot, run_id).status == RunStatus.STOPPED, 120, "the stop"
        )
        await pilot.press("x", "y")
        await wait_until(pilot, lambda: table(pilot).row_count == 0, 60, "the removal")
        await pilot.press("q")
