"""The hosts panel's dataset line: each host's datasets as the last `seglab data ls` stored
them, updated while the dashboard runs, cut between datasets at 80 columns."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from seglab import paths
from seglab.data.checks import Check, CheckCache, scan
from seglab.machines import LocalMachine
from seglab.tui.app import SeglabApp
from tests.tui.pilotlib import hosts_text, sync, wait_until
from tests.unit.test_data_layouts import complete_voc


def _hosts_yaml(datasets: dict[str, Path]) -> None:
    hosts = Path(os.environ["XDG_CONFIG_HOME"]) / "seglab" / "hosts.yaml"
    hosts.parent.mkdir(parents=True, exist_ok=True)
    listed = ", ".join(f"{name}: {root}" for name, root in datasets.items())
    hosts.write_text(f"hosts:\n  local:\n    datasets: {{{listed}}}\n")


def _data_line(pilot: Pilot[Any]) -> str:
    """The panel's data line, as the eye reads it (no-break spaces shown as spaces)."""
    for line in hosts_text(pilot).splitlines():
        if line.strip().startswith("data "):
            return line.replace("\u00a0", " ")
    return ""


@sync
async def test_checked_and_missing_datasets_show_their_marks(tmp_path: Path) -> None:
    _hosts_yaml({"voc": tmp_path / "voc", "cityscapes": tmp_path / "missing"})
    cache = CheckCache(paths.state_dir())
    missing = await scan(LocalMachine("local"), "cityscapes", str(tmp_path / "missing"))
    cache.put([missing])  # `seglab data ls` found no cityscapes; voc not checked yet
    app = SeglabApp(follow_logs=False)
    async with app.run_test(size=(80, 30)) as pilot:
        line = await wait_until(pilot, lambda: _data_line(pilot), 30, "the data line")
        assert line.strip() == "data  cityscapes ✗"
        lines = hosts_text(pilot).splitlines()
        assert lines[0].startswith("local  this machine")
        assert lines[1].replace("\u00a0", " ") == line  # under its host's header
        # A later `data ls` is shown at a following tick, without restarting.
        cache.put([Check("local", "voc", complete_voc(str(tmp_path / "voc")), time.time())])
        line = await wait_until(
            pilot, lambda: "voc ✓" in _data_line(pilot) and _data_line(pilot), 10, "voc ✓"
        )
        assert line.strip() == "data  cityscapes ✗ voc ✓"
        await pilot.press("q")


@sync
async def test_a_long_data_line_is_cut_between_datasets_at_80_columns(tmp_path: Path) -> None:
    names = [f"cityscapes-coarse-{i}" for i in range(8)]
    _hosts_yaml({name: tmp_path / name for name in names})
    machine = LocalMachine("local")
    checks = await asyncio.gather(*(scan(machine, n, str(tmp_path / n)) for n in names))
    CheckCache(paths.state_dir()).put(checks)
    app = SeglabApp(follow_logs=False)
    async with app.run_test(size=(80, 30)) as pilot:
        line = await wait_until(pilot, lambda: _data_line(pilot), 30, "the data line")
        assert len(line) <= 80 and line.endswith("…")
        shown = line.strip().removeprefix("data").removesuffix("…").split()
        assert len(shown) >= 4 and len(shown) % 2 == 0  # whole "name ✗" pairs only
        assert shown[::2] == names[: len(shown) // 2] and set(shown[1::2]) == {"✗"}
        await pilot.press("q")
