"""`p` (prediction samples) and `i` (per-class IoU) in the dashboard: Pilot, an SVG snapshot
with half-block images, and the real app in tmux at 80x24."""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from seglab import paths
from seglab.tui.app import SeglabApp
from seglab.tui.class_iou import ClassIouScreen
from seglab.tui.feeds import FixedFeed
from seglab.tui.preview import PreviewScreen
from seglab.workstation import Workstation
from tests.tui.pilotlib import select_run, sync, table, wait_until
from tests.tui.replay import REPO, T0, replayed_states
from tests.tui.samples_seed import IDS, seed_sample_runs

Snap = Callable[..., bool]


@pytest.fixture
def make_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[], SeglabApp]:
    """A dashboard over the two sample runs and replayed GPUs, fixed clock, no engine."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/seglab-snapshot.sock")
    state = paths.state_dir()
    state.mkdir(parents=True, exist_ok=True)
    seed_sample_runs(state, tmp_path / "runs")
    states, history = replayed_states()

    def make() -> SeglabApp:
        return SeglabApp(
            Workstation(),
            feed=FixedFeed(states, history),
            clock=lambda: T0,
            follow_logs=False,
        )

    return make


async def _rows(pilot: Pilot[Any]) -> None:
    await wait_until(pilot, lambda: table(pilot).row_count == 2, 30, "the two runs")


def _title(screen: PreviewScreen) -> str:
    return str(screen.query_one("#preview-title", Static).render())


def _captions(screen: PreviewScreen) -> list[str]:
    return [str(s.render()) for s in screen.query(".panel Static").results(Static)]


async def _open_preview(pilot: Pilot[Any], run_id: str) -> PreviewScreen:
    await _rows(pilot)
    await select_run(pilot, run_id)
    await pilot.press("p")
    screen = await wait_until(
        pilot, lambda: isinstance(pilot.app.screen, PreviewScreen) and pilot.app.screen, 10, "p"
    )
    await wait_until(pilot, lambda: len(_captions(screen)) == 4, 20, "the four panels")
    return screen


@sync
async def test_preview_steps_through_images_iterations_and_variants(
    make_app: Callable[[], SeglabApp],
) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_preview(pilot, "abl.full.bbbbbb")
        assert "iter 8 (2/2)" in _title(screen) and f"{IDS[0]} (1/3)" in _title(screen)
        assert _captions(screen) == ["image", "ground truth", "overlay", "error"]
        images = [
            type(w).__name__ for w in screen.query(".panel > *") if "Image" in type(w).__name__
        ]
        assert images == ["HalfcellImage"] * 4  # no Kitty/Sixel terminal here: half-blocks

        await pilot.press("right")
        await wait_until(pilot, lambda: f"{IDS[1]} (2/3)" in _title(screen), 10, "next image")
        await pilot.press("left", "left")
        await wait_until(pilot, lambda: f"{IDS[2]} (3/3)" in _title(screen), 10, "wrap around")
        await pilot.press("up")
        await wait_until(pilot, lambda: "iter 4 (1/2)" in _title(screen), 10, "earlier eval")
        await pilot.press("down")
        await wait_until(pilot, lambda: "iter 8 (2/2)" in _title(screen), 10, "later eval")

        # v: the same image across every variant of the recipe, side by side.
        await pilot.press("v")
        want = ["image", "ground truth", "res=half: overlay", "res=full: overlay"]
        await wait_until(pilot, lambda: _captions(screen) == want, 10, "both variants")
        assert f"{IDS[2]} (3/3)" in _title(screen)
        await pilot.press("e")
        await wait_until(pilot, lambda: "res=half: pred" in _captions(screen), 10, "pred view")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, PreviewScreen), 10, "close")


@sync
async def test_comparison_shows_one_image_across_variants(
    make_app: Callable[[], SeglabApp],
) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await _rows(pilot)
        await select_run(pilot, "abl.half.aaaaaa")
        await pilot.press("c")
        await wait_until(pilot, lambda: app.screen.query("#compare"), 10, "the comparison")
        await pilot.press("p")
        screen = await wait_until(
            pilot, lambda: isinstance(app.screen, PreviewScreen) and app.screen, 10, "samples"
        )
        captions = await wait_until(
            pilot, lambda: len(_captions(screen)) == 4 and _captions(screen), 20, "panels"
        )
        assert sorted(captions[2:]) == ["res=full: overlay", "res=half: overlay"]
        await pilot.press("shift+left")
        await wait_until(pilot, lambda: "iter 4 (1/2)" in _title(screen), 10, "earlier eval")


@sync
async def test_class_iou_heat_table_worst_classes_first(make_app: Callable[[], SeglabApp]) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await _rows(pilot)
        await select_run(pilot, "abl.half.aaaaaa")
        await pilot.press("i")
        screen = await wait_until(
            pilot, lambda: isinstance(app.screen, ClassIouScreen) and app.screen, 10, "i"
        )
        grid = screen.query_one("#class-iou", DataTable)
        await wait_until(pilot, lambda: grid.row_count == 4, 10, "the classes")
        names = [str(grid.get_row_at(i)[0]) for i in range(4)]
        assert names == ["rider", "pole", "road", "background"]
        assert sorted(str(c) for c in grid.get_row_at(0)[1:]) == ["  3.1", "  5.2"]
        worst = grid.get_row_at(0)[1]
        assert worst.style.bgcolor is not None and worst.style.bgcolor.triplet is not None
        assert worst.style.bgcolor.triplet.red > worst.style.bgcolor.triplet.green


def test_preview_snapshot(snap_compare: Snap, make_app: Callable[[], SeglabApp]) -> None:
    async def open_preview(pilot: Pilot[Any]) -> None:
        await _open_preview(pilot, "abl.full.bbbbbb")
        await pilot.pause(0.3)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=open_preview)


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """A private tmux server (its own socket), killed afterwards."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (.ci/packages.sh installs it)")
    base = ["tmux", "-L", f"seglab-preview-{os.getpid()}", "-f", os.devnull]
    yield base
    subprocess.run([*base, "kill-server"], capture_output=True, check=False)


def _screen(tmux: list[str]) -> str:
    return subprocess.run(
        [*tmux, "capture-pane", "-p", "-t", "seglab"], capture_output=True, text=True, check=True
    ).stdout


def _wait_screen(tmux: list[str], predicate: Callable[[str], bool], what: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = _screen(tmux)
        if predicate(text):
            return text
        time.sleep(0.1)
    raise AssertionError(f"no {what} after 30 s:\n{_screen(tmux)}")


def test_preview_in_tmux_at_80x24(tmux: list[str], tmp_path: Path) -> None:
    state = paths.state_dir()
    state.mkdir(parents=True, exist_ok=True)
    seed_sample_runs(state, tmp_path / "runs")
    # No Docker engine: runs a shared engine holds must not show up.
    env = {**os.environ, "TERM": "xterm-256color", "DOCKER_HOST": "unix:///nonexistent/s.sock"}
    command = f"cd {REPO} && {sys.executable} -m seglab"
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "seglab", "-x", "80", "-y", "24", command],
        check=True,
        env=env,
    )
    _wait_screen(tmux, lambda s: "abl.half" in s and "abl.full" in s, "runs table")
    subprocess.run([*tmux, "send-keys", "-t", "seglab", "p"], check=True)
    shown = _wait_screen(tmux, lambda s: "ground truth" in s and "error" in s, "preview")
    assert "iter 8 (2/2)" in shown and f"{IDS[0]} (1/3)" in shown
    inner = [line[2:-2] for line in shown.splitlines()[2:-2]]
    assert sum(("▀" in line or "▄" in line) for line in inner) >= 4, "half-block images"
    subprocess.run([*tmux, "send-keys", "-t", "seglab", "Right"], check=True)
    _wait_screen(tmux, lambda s: f"{IDS[1]} (2/3)" in s, "next image")
    subprocess.run([*tmux, "send-keys", "-t", "seglab", "Escape", "q"], check=True)


MEASURE_CELL = """
import sys
{imports}
from textual_image._terminal import get_cell_size
print(tuple(get_cell_size()))
"""


def _cell_in_a_zero_sized_pty(imports: str) -> subprocess.CompletedProcess[str]:
    """Measure textual-image's cell with stdout on a real pty that reports 0 rows and 0
    columns (but its pixels), after ``imports``."""
    main, child = pty.openpty()
    try:
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 800, 600))
        return subprocess.run(
            [sys.executable, "-c", MEASURE_CELL.format(imports=imports)],
            stdin=child,
            stdout=child,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(child)
        os.close(main)


def test_a_terminal_reporting_no_size_does_not_break_the_preview() -> None:
    bare = _cell_in_a_zero_sized_pty("")
    assert bare.returncode != 0 and "ZeroDivisionError" in bare.stderr, "textual-image alone"
    guarded = _cell_in_a_zero_sized_pty("import seglab.tui.preview")
    assert guarded.returncode == 0, guarded.stderr
