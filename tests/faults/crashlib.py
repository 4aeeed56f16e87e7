"""Helpers of the crash tests: a `seglab` command killed (SIGKILL) at a named step, and
the checks every crash must pass (true status, no stray reservation, no untracked run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from seglab import paths
from seglab.registry import Registry
from seglab.runs.intents import FAULT_ENV
from seglab.runtime.process import ProcessRuntime
from tests.e2e.runlib import REPO, events_file, ps, wait_for

INJECTED: list[str] = []  # the steps killed at in this session (the figures in docs)


def crash(step: str, *args: str, env: dict[str, str] | None = None) -> None:
    """Run `seglab ARGS` with SEGLAB_FAULT=step and check that it died there."""
    out = subprocess.run(
        [sys.executable, "-m", "seglab", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, **(env or {}), FAULT_ENV: step},
        check=False,
    )
    assert out.returncode == -signal.SIGKILL, (
        f"seglab {' '.join(args)} was to die at {step} but exited {out.returncode}:\n"
        f"{out.stdout}\n{out.stderr}"
    )
    INJECTED.append(step)


def rows() -> dict[str, dict[str, Any]]:
    """`seglab ps --all --json` by run id (the command that reconciles first)."""
    return {row["run_id"]: row for row in ps()}


def held() -> dict[tuple[str, str], str]:
    """Every GPU reservation in the registry."""
    with Registry() as registry:
        return registry.holders()


def intents() -> list[str]:
    """The run ids with an intent still in the registry."""
    with Registry() as registry:
        return [row.run_id for row in registry.intents()]


def process_runs() -> list[tuple[str, str]]:
    """(run id, state) of every run (member) the process runtime has, ended ones too."""
    runtime = ProcessRuntime(paths.default_runs_root())
    return [
        (info.labels["seglab.run_id"], info.state.status)
        for info in runtime.list({"seglab.run_id": None})
    ]


def run_dirs() -> list[str]:
    """The folders under the runs root (one per run, or per member)."""
    root = paths.default_runs_root()
    return (
        sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
        if root.exists()
        else []
    )


def consistent() -> dict[str, dict[str, Any]]:
    """The invariants after any crash, checked once `ps` has reconciled: no intent left,
    every reservation belongs to a run that is still going, every process-runtime run that
    is still active is a run `ps` shows as active. Returns the rows."""
    found = rows()
    assert intents() == []
    for (host, gpu), run_id in held().items():
        assert run_id in found, f"{host}:{gpu} held by {run_id}, which ps does not show"
        assert found[run_id]["status"] in ("starting", "running"), found[run_id]
    for run_id, state in process_runs():
        if state == "running":
            assert run_id in found, f"{run_id} runs untracked"
            assert found[run_id]["status"] in ("starting", "running"), found[run_id]
    return found


def wait_status(run_id: str, *statuses: str, timeout: float = 180) -> dict[str, Any]:
    """The run's row once its status is one of ``statuses``."""
    found: dict[str, Any] = wait_for(
        lambda: (row := rows().get(run_id)) and row["status"] in statuses and row,
        timeout,
        f"{run_id} to be {'/'.join(statuses)}",
    )
    return found


def only_run() -> str:
    """The id of the one run the process runtime or `ps` knows."""
    ids = set(rows()) | {run_id for run_id, _ in process_runs()}
    assert len(ids) == 1, ids
    return ids.pop()


def events_whole(run_id: str, run_dir: str) -> int:
    """Check that the registry holds each event of the run's events.jsonl exactly once
    (none lost, none doubled by the crash and the recovery); returns how many."""
    with Registry() as registry:
        stored = [event.seq for event in registry.events(run_id)]
    written = [record["seq"] for record in events_file(run_dir)]
    assert stored == sorted(set(written)) == written, (stored, written)
    return len(stored)


def leftovers(run_id: str) -> list[Path]:
    """Process-runtime records of ``run_id`` still on disk (process.json files)."""
    root = paths.default_runs_root()
    return [p for p in root.glob("*/process.json") if p.parent.name.startswith(run_id)]
