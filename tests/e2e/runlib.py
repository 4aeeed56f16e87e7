"""Helpers for end-to-end run tests: the real `seglab` CLI in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seglab.hostqueue.store import HostQueue
from tests.standin import use_standin

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "tests" / "fixtures" / "recipes"
SITE = (
    Path(sys.prefix)
    / "lib"
    / f"python{sys.version_info.major}.{sys.version_info.minor}"
    / "site-packages"
)
DEV_MOUNTS = f"{SITE}:/usr/local/lib/python3.11/dist-packages,{REPO}:/opt/seglab"
"""SEGLAB_DEV_MOUNTS for containers of the CI image: this venv's packages and the checkout."""


def seglab(
    *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `python -m seglab ARGS` (environment inherited: the test's XDG dirs)."""
    out = subprocess.run(
        [sys.executable, "-m", "seglab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
    if check and out.returncode != 0:
        raise AssertionError(
            f"seglab {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
        )
    return out


def start_seglab(*args: str) -> subprocess.Popen[str]:
    """`python -m seglab ARGS` in the background: stdout piped as text, stderr dropped."""
    return subprocess.Popen(
        [sys.executable, "-m", "seglab", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def ps(*extra: str) -> list[dict[str, Any]]:
    """`seglab ps --all --json` (plus extra args)."""
    rows: list[dict[str, Any]] = json.loads(seglab("ps", "--all", "--json", *extra).stdout)
    return rows


def run_row(run_id: str) -> dict[str, Any]:
    """The `ps` row of one run."""
    for row in ps():
        if row["run_id"] == run_id:
            return row
    raise AssertionError(f"{run_id} not in seglab ps --all")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    """Poll until ``predicate()`` is truthy; its value, or AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def events_file(run_dir: str) -> list[dict[str, Any]]:
    """The records of a run dir's events.jsonl."""
    path = Path(run_dir) / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ended_runs(runs: Path) -> list[list[dict[str, Any]]]:
    """The events of every run dir under ``runs`` whose run has ended."""
    found = [events_file(str(p.parent)) for p in runs.glob("*/events.jsonl")]
    return [e for e in found if e and e[-1]["kind"] == "end"]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most (start, end) spans that overlap at one instant."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def grid_ran_once(runs: Path, count: int, at_once: int, timeout: float) -> list[str]:
    """Wait until ``count`` runs under the runs root ``runs`` have ended and its host's
    queue runner has exited; check that each ran exactly once and finished, never more
    than ``at_once`` at a time, and that the queue is empty. The ids the runner started,
    in order."""
    ended = wait_for(
        lambda: len(ended_runs(runs)) == count and ended_runs(runs), timeout, f"{count} ends"
    )
    queue = HostQueue(runs)
    wait_for(lambda: not queue.pid_file.exists(), 60, "the runner to exit")
    assert queue.items() == []
    spans = []
    for records in ended:
        starts = [r for r in records if r["kind"] == "start"]
        ends = [r for r in records if r["kind"] == "end"]
        assert len(starts) == 1 and len(ends) == 1, "each variant ran exactly once"
        assert ends[0]["status"] == "finished", ends
        spans.append((starts[0]["time"], ends[0]["time"]))
    assert most_at_once(spans) <= at_once, spans
    return [e["run_id"] for e in queue.journal() if e["kind"] == "started"]


def final(run_id: str) -> dict[str, Any] | None:
    """The run's row once it has ended, else None."""
    row = run_row(run_id)
    return row if row["status"] in ("finished", "failed", "stopped", "oom_killed", "lost") else None


def stop_then_resume(run_id: str, run_dir: Path, world_size: int) -> int:
    """`seglab stop` (one event stream ending `stopped`), then `seglab resume`: waits for
    the resumed start event and returns the iteration it resumed from."""
    assert f"{run_id}: stopped" in seglab("stop", run_id, "--timeout", "60").stdout
    records = events_file(str(run_dir))
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(set(seqs)), "one event stream: the main rank alone writes"
    assert records[-1]["kind"] == "end" and records[-1]["status"] == "stopped"
    saved: int = max(r["iter"] for r in records if r["kind"] == "checkpoint")
    seglab("resume", run_id)
    wait_for(
        lambda: sum(r["kind"] == "start" for r in events_file(str(run_dir))) == 2,
        180,
        "the resumed start event",
    )
    resumed = [r for r in events_file(str(run_dir)) if r["kind"] == "start"][1]
    assert resumed["resumed_from"] == saved > 0
    assert resumed["world_size"] == world_size
    return saved


def standin_host(home: Path, monkeypatch: pytest.MonkeyPatch, gpus: int) -> Path:
    """hosts.yaml under ``home``: `local` with ``gpus`` idle stand-in GPUs and its runs
    root; that root."""
    standin = use_standin(monkeypatch, gpus=gpus, phase="idle")
    runs = home / "runs"
    hosts = home / "config" / "seglab" / "hosts.yaml"
    hosts.parent.mkdir(parents=True, exist_ok=True)
    hosts.write_text(
        "hosts:\n  local:\n    telemetry: nvidia-smi\n"
        f"    nvidia_smi: {standin}\n    runs_root: {runs}\n"
    )
    return runs
