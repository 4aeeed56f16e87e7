"""Pilot tests of the dashboard against the real registry, telemetry and stand-in driver."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Static

from seglab.telemetry.sample import HostState, HostStatus
from seglab.tui import app as tui_app
from seglab.tui.app import NO_HOSTS_HINT, SeglabApp
from seglab.tui.feeds import FixedFeed
from seglab.tui.format import DASH
from seglab.tui.layouts import LayoutError, available_layouts, resolve_layout
from seglab.tui.log_pane import LogPane
from seglab.tui.metrics_chart import MetricsChart
from seglab.tui.screens import CompareScreen, ConfirmScreen, HelpScreen, comparison_table
from seglab.workstation import Workstation
from tests.standin import use_standin
from tests.tui.pilotlib import hosts_text, select_run, sync, table, wait_until
from tests.tui.replay import H100, T0, TRAIN_LOG, replay, replayed_states, seed_runs


def _standin_hosts(monkeypatch: pytest.MonkeyPatch, phase: str) -> None:
    standin = use_standin(monkeypatch, gpus=2, phase=phase)
    hosts = Path(os.environ["XDG_CONFIG_HOME"]) / "seglab" / "hosts.yaml"
    hosts.parent.mkdir(parents=True, exist_ok=True)
    hosts.write_text(
        f"hosts:\n  local:\n    telemetry: nvidia-smi\n    nvidia_smi: {standin}\n"
        "    telemetry_interval: 0.5\n"
    )


@sync
async def test_standin_gpus_show_the_capture_values(monkeypatch: pytest.MonkeyPatch) -> None:
    _standin_hosts(monkeypatch, "load")
    app = SeglabApp(follow_logs=False)
    async with app.run_test(size=(150, 40)) as pilot:
        # GPU values first, then the processes (a separate query) on the next readings.
        text = await wait_until(
            pilot,
            lambda: hosts_text(pilot).count("memhog") == 2 and hosts_text(pilot),
            30,
            "the stand-in's GPUs and processes",
        )
        lines = text.splitlines()
        assert lines[0].startswith("local  this machine")
        assert "nvidia-smi ok" in lines[0] and "driver 590.48.01" in lines[0]
        gpu_lines = [line for line in lines if "H100 80GB HBM3" in line]
        assert len(gpu_lines) == 2
        for line in gpu_lines:  # the H100 capture under load (nvidia-smi prints the same)
            assert "100%" in line
            assert "19.4/80G" in line  # 19818 / 81559 MiB
            assert "59°C" in line
            assert "632/700W" in line
            assert "/root/tools/memhog" in line and "./gpu_burn" in line
        assert NO_HOSTS_HINT not in text  # hosts.yaml exists
        await pilot.press("q")
    assert app.return_code == 0


@sync
async def test_first_start_without_hosts_yaml_shows_local_and_a_hint() -> None:
    app = SeglabApp(follow_logs=False)
    async with app.run_test(size=(150, 40)) as pilot:
        text = await wait_until(
            pilot,
            lambda: (
                NO_HOSTS_HINT in hosts_text(pilot)
                and "local" in hosts_text(pilot)
                and hosts_text(pilot)
            ),
            30,
            "this machine and the hint",
        )
        assert text.splitlines()[0].startswith("local  this machine")
        if "no NVIDIA GPU: CPU only" in text:  # no NVIDIA GPU here: CPU and RAM, and why
            assert "cpu " in text and "ram " in text
            assert "no NVIDIA GPU" in text
        assert table(pilot).row_count == 0
        await pilot.press("q")


@sync
async def test_bad_hosts_yaml_is_shown_inline() -> None:
    hosts = Path(os.environ["XDG_CONFIG_HOME"]) / "seglab" / "hosts.yaml"
    hosts.parent.mkdir(parents=True, exist_ok=True)
    hosts.write_text("hosts:\n  lab1:\n    telemetry: sometimes\n")
    app = SeglabApp(follow_logs=False)
    async with app.run_test(size=(150, 40)) as pilot:
        text = await wait_until(
            pilot,
            lambda: "hosts.yaml has errors" in hosts_text(pilot) and hosts_text(pilot),
            30,
            "the error",
        )
        assert "hosts.yaml:3" in text and "telemetry" in text
        await pilot.press("q")


def test_layouts_shipped_user_override_and_unknown(tmp_path: Path) -> None:
    assert {"default", "compact", "wide"} <= set(available_layouts())
    user = Path(os.environ["XDG_CONFIG_HOME"]) / "seglab" / "layouts"
    user.mkdir(parents=True)
    (user / "mine.tcss").write_text("#metrics { display: none; }\n")
    (user / "compact.tcss").write_text("#hosts { max-height: 4; }\n")
    assert resolve_layout("mine") == user / "mine.tcss"
    assert resolve_layout("compact") == user / "compact.tcss"
    with pytest.raises(LayoutError) as err:
        resolve_layout("nope")
    message = str(err.value)
    assert "no layout 'nope'" in message
    assert "compact, default, mine, wide" in message


def test_unknown_layout_from_the_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    assert tui_app.run(layout="nope") == 2
    err = capsys.readouterr().err
    assert err.startswith("seglab: no layout 'nope'; available: compact, default, wide")


def _seeded_app(monkeypatch: pytest.MonkeyPatch, layout: str = "default") -> SeglabApp:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/seglab-test.sock")
    states, history = replayed_states()
    ws = Workstation()
    seed_runs(ws)
    return SeglabApp(
        ws, layout=layout, feed=FixedFeed(states, history), clock=lambda: T0, follow_logs=False
    )


@sync
async def test_runs_table_log_pane_and_chart_from_the_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = _seeded_app(monkeypatch)
    async with app.run_test(size=(150, 45)) as pilot:
        runs = await wait_until(
            pilot, lambda: table(pilot).row_count == 3 and table(pilot), 30, "the seeded runs"
        )
        assert list(runs.rows_by_id) == [
            "tiny-grid.lr-low.a1b2c3",
            "tiny-grid.lr-high.d4e5f6",
            "tiny.default.0a0b0c",
        ]
        assert str(runs.get_cell("tiny-grid.lr-high.d4e5f6", "miou")) == "0.470"
        assert str(runs.get_cell("tiny.default.0a0b0c", "miou")) == DASH  # no value, not 0
        assert str(runs.get_cell("tiny-grid.lr-low.a1b2c3", "status")) == "running"
        # No engine answers on DOCKER_HOST here: the local header says so.
        await wait_until(
            pilot, lambda: "· no docker engine" in hosts_text(pilot), 10, "the engine state"
        )
        # The chart holds every variant of the selected run's ablation.
        chart = app.query_one("#metrics", MetricsChart)
        await wait_until(pilot, lambda: len(chart.shown) == 2, 10, "both variants' curves")
        assert {c.variant for c in chart.shown} == {"lr=low", "lr=high"}
        high = next(c for c in chart.shown if c.variant == "lr=high")
        assert high.miou == [(4, 0.38), (8, 0.47)]

        # A poll that changes one value updates that cell in place: cursor and rows stay.
        await select_run(pilot, "tiny-grid.lr-high.d4e5f6")
        app.workstation._run_registry().update_run("tiny-grid.lr-low.a1b2c3", last_loss=0.123)
        await wait_until(
            pilot,
            lambda: str(runs.get_cell("tiny-grid.lr-low.a1b2c3", "loss")) == "0.123",
            10,
            "the new loss",
        )
        assert runs.current == "tiny-grid.lr-high.d4e5f6"

        # Log pane: event lines hidden by default, v shows them, f toggles follow, / searches.
        pane = app.query_one("#logpane", LogPane)
        pane.feed(TRAIN_LOG)
        await wait_until(pilot, pane.lines_shown, 5, "the log lines")
        assert not any("@seglab" in line for line in pane.lines_shown())
        await pilot.press("v")
        assert any("@seglab" in line for line in pane.lines_shown())
        assert pane.follow
        await pilot.press("f")
        assert not pane.follow
        await pilot.press("f", "slash")
        for key in "mIoU":
            await pilot.press(key)
        await pilot.press("enter")
        hit = pane.lines_shown().index(next(x for x in pane.lines_shown() if "mIoU" in x))
        status = str(app.query_one("#log-status", Static).render())
        assert f"match at line {hit + 1}" in status
        assert not pane.follow  # a search stops following so the match stays in view
        await pilot.press("escape")
        assert not app.query_one("#log-search").display
        await pilot.press("q")


@sync
async def test_mark_remove_resume_shell_compare_help(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _seeded_app(monkeypatch)
    async with app.run_test(size=(150, 45)) as pilot:
        await wait_until(pilot, lambda: table(pilot).row_count == 3, 30, "the seeded runs")
        # e on a process run: a clear message, no shell.
        await pilot.press("e")
        await wait_until(
            pilot,
            lambda: any("no container to enter" in n.message for n in app._notifications),
            5,
            "the message",
        )
        # r on a run that never had a handle: the domain's error, shown inline.
        await select_run(pilot, "tiny.default.0a0b0c")
        await pilot.press("r")
        await wait_until(
            pilot,
            lambda: any(
                "never started; nothing to resume" in n.message for n in app._notifications
            ),
            10,
            "resume error",
        )
        # c: the ablation of the selected run, best per column highlighted.
        await select_run(pilot, "tiny-grid.lr-high.d4e5f6")
        await pilot.press("c")
        screen = await wait_until(
            pilot,
            lambda: isinstance(app.screen, CompareScreen) and app.screen,
            10,
            "the comparison",
        )
        assert [r.variant for r in screen.rows] == ["lr=low", "lr=high"]
        compare = screen.query_one("#compare", DataTable)
        assert compare.row_count == 2
        await pilot.press("escape")
        # ? help, escape closes it.
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        # space marks two ended runs; x asks, n keeps them, x + y removes both.
        await pilot.press("space")
        await select_run(pilot, "tiny.default.0a0b0c")
        await pilot.press("space")
        assert table(pilot).chosen() == ["tiny-grid.lr-high.d4e5f6", "tiny.default.0a0b0c"]
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause(0.3)
        assert len(app.workstation._run_registry().list_runs()) == 3
        await pilot.press("x")
        await pilot.press("y")
        await wait_until(pilot, lambda: table(pilot).row_count == 1, 15, "the removal")
        assert [r.run_id for r in app.workstation._run_registry().list_runs()] == [
            "tiny-grid.lr-low.a1b2c3"
        ]
        # j / t go through the façade; here (a seeded run, no full image) each answers with
        # its reason inline instead of a traceback.
        await pilot.press("j")
        await pilot.press("t")

        def said(prefix: str) -> bool:
            return any(n.message.startswith(prefix) for n in app._notifications)

        assert said("starting JupyterLab on local") and said("starting TensorBoard for ")
        await wait_until(
            pilot,
            lambda: said("notebook: ") and said("tensorboard: "),
            60,
            "both forwards to answer",
        )
        await pilot.press("q")


def test_comparison_highlights_the_best_of_each_column() -> None:
    ws = Workstation()
    seed_runs(ws)
    rows = ws.comparison(["tiny-grid.lr-low.a1b2c3", "tiny-grid.lr-high.d4e5f6"], now=T0)
    assert [r.best_miou for r in rows] == [0.41, 0.47]
    assert rows[1].per_class_iou == pytest.approx((0.67, 0.47, 0.27))
    assert rows[0].time_s == pytest.approx(590.0)  # still running: until `now`
    assert rows[1].time_s == pytest.approx(489.0)  # finished_at - started_at
    header, body = comparison_table(rows, ws.class_names(rows[0].run_id))
    assert header == [
        "variant",
        "status",
        "best mIoU",
        "pixel acc",
        "background",
        "shape_1",
        "shape_2",
        "img/s",
        "time",
    ]
    assert body[1][2].plain == "0.470" and body[1][2].style == "bold green"
    assert body[0][2].style == ""
    assert body[1][8].plain == "8m09s" and body[1][8].style == "bold green"  # shorter wins


def test_placement_choices_list_free_gpus_and_cpu() -> None:
    ws = Workstation()
    idle = replay(H100, "local", 3, "idle")
    busy = replay(H100, "local", 1, "load")  # foreign processes above the memory threshold
    states, _ = replayed_states()
    local = HostState(
        "local",
        "nvidia-smi",
        HostStatus.OK,
        gpus=(*idle[:2], replace(busy[0], index=2, uuid=idle[2].uuid)),
    )
    assert ws._run_registry().reserve("local", [idle[1].uuid], "someone")
    choices = [value for value, _ in ws.placement_choices([local, *states[1:]])]
    # GPU 1 is held by a run, GPU 2 used by others; lab1 and cpubox are not in this
    # hosts.yaml (there is none: this machine alone).
    assert choices == ["auto", "local:0", "local:cpu"]


@sync
async def test_unreachable_ssh_host_is_shown_offline_with_the_reason() -> None:
    hosts = Path(os.environ["XDG_CONFIG_HOME"]) / "seglab" / "hosts.yaml"
    hosts.parent.mkdir(parents=True, exist_ok=True)
    hosts.write_text("hosts:\n  lab9:\n    ssh: nobody@127.0.0.1:9\n")  # nothing listens
    app = SeglabApp(follow_logs=False)
    async with app.run_test(size=(150, 40)) as pilot:
        text = await wait_until(
            pilot,
            lambda: "connection refused" in hosts_text(pilot) and hosts_text(pilot),
            30,
            "the refused connection",
        )
        header = next(line for line in text.splitlines() if line.startswith("lab9"))
        assert header.startswith("lab9  offline")
        assert "cannot connect to nobody@127.0.0.1:9: connection refused by 127.0.0.1" in header
        assert any(line.startswith("local  this machine") for line in text.splitlines())
        await pilot.press("q")


@sync
async def test_palette_offers_the_actions_and_resizing_keeps_the_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = _seeded_app(monkeypatch)
    async with app.run_test(size=(150, 45)) as pilot:
        await wait_until(pilot, lambda: table(pilot).row_count == 3, 30, "the seeded runs")
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for title in (
            "new run (n)",
            "stop (s)",
            "kill (k)",
            "resume (r)",
            "remove (x)",
            "compare (c)",
            "shell (e)",
            "notebook (j)",
            "tensorboard (t)",
            "follow (f)",
            "events (v)",
            "search (/)",
            "help (?)",
        ):
            assert title in titles
        await select_run(pilot, "tiny.default.0a0b0c")
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.3)
        runs = table(pilot)
        assert runs.size.width <= 80 and runs.size.height >= 3
        assert runs.current == "tiny.default.0a0b0c" and runs.row_count == 3
        await pilot.press("q")


@pytest.mark.docker
@sync
async def test_local_docker_engine_version_in_the_host_header(docker_client: Any) -> None:
    expected = f"docker {docker_client.version()['Version']}"
    app = SeglabApp(follow_logs=False)
    async with app.run_test(size=(150, 40)) as pilot:
        text = await wait_until(
            pilot, lambda: expected in hosts_text(pilot) and hosts_text(pilot), 30, expected
        )
        assert text.splitlines()[0].startswith("local  this machine")
        assert expected in text.splitlines()[0]
        await pilot.press("q")
