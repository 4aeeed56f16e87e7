"""`seglab` in a real terminal (tmux): it reaches its first frame, `q` quits and restores it.

How soon the first frame and the GPU rows come is measured by benchmarks/dashboard_start.py
(timing is no pass/fail matter for a test on a shared machine)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tui.replay import REPO

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (.ci/packages.sh installs it)"
)

SESSION = "seglab"


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """A private tmux server (its own socket), killed afterwards."""
    base = ["tmux", "-L", f"seglab-test-{os.getpid()}", "-f", os.devnull]
    yield base
    subprocess.run([*base, "kill-server"], capture_output=True, check=False)


def _show(tmux: list[str], what: str) -> str:
    out = subprocess.run(
        [*tmux, "display-message", "-p", "-t", SESSION, what],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _screen(tmux: list[str]) -> str:
    return subprocess.run(
        [*tmux, "capture-pane", "-p", "-t", SESSION], capture_output=True, text=True, check=True
    ).stdout


def test_the_dashboard_draws_and_q_restores_the_terminal(tmux: list[str], tmp_path: Path) -> None:
    status = tmp_path / "exit-status"
    # The shell stays a few seconds after seglab exits, so the terminal state it left
    # behind can be read (a dead pane no longer reports it).
    command = f"cd {REPO} && {sys.executable} -m seglab; echo $? > {status}; sleep 30"
    start = time.monotonic()
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", SESSION, "-x", "120", "-y", "36", command],
        check=True,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    drawn = False
    while not drawn and time.monotonic() - start < 30:
        lines = _screen(tmux).splitlines()
        drawn = bool(lines) and "seglab" in lines[0] and "▦" in lines[0]
        time.sleep(0.05)
    assert drawn, f"no dashboard header after 30 s:\n{_screen(tmux)}"
    time.sleep(0.5)  # let it mount fully before quitting
    assert _show(tmux, "#{alternate_on}") == "1"  # the dashboard draws on the alternate screen
    assert _show(tmux, "#{mouse_any_flag}") == "1"
    subprocess.run([*tmux, "send-keys", "-t", SESSION, "q"], check=True)
    deadline = time.monotonic() + 10
    while not status.exists() or not status.read_text().strip():
        assert time.monotonic() < deadline, f"seglab did not exit on q:\n{_screen(tmux)}"
        time.sleep(0.05)
    assert status.read_text().strip() == "0"
    # The terminal is as it was: main screen, cursor shown, no mouse reporting, no dashboard.
    assert _show(tmux, "#{alternate_on}") == "0"
    assert _show(tmux, "#{cursor_flag}") == "1"
    assert _show(tmux, "#{mouse_any_flag}") == "0"
    assert "▦" not in _screen(tmux)
