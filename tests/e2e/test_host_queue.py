"""The host queue end to end: a grid larger than the host's GPUs goes on after the
workstation is SIGKILLed, started by the host's queue runner (process runtime, stand-in
GPUs), and the workstation adopts every run afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from seglab.hostqueue.store import HostQueue
from seglab.runtime.procwrap import PROCESS_FILE
from tests.e2e.runlib import (
    RECIPES,
    REPO,
    ended_runs,
    events_file,
    grid_ran_once,
    most_at_once,
    ps,
    seglab,
    standin_host,
    start_seglab,
    wait_for,
)

pytestmark = pytest.mark.slow


def test_grid_goes_on_after_the_workstation_is_killed(
    isolated_xdg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = standin_host(isolated_xdg, monkeypatch, 2)
    workstation = start_seglab(
        "run", str(RECIPES / "tiny-six.yaml"), "--on", "local", "--runtime", "process", "--wait"
    )
    assert workstation.stdout is not None
    ids = [workstation.stdout.readline().strip() for _ in range(6)]
    queue = HostQueue(runs)
    waiting = json.loads(seglab("queue", "--json").stdout)
    assert [(w["host"], w["position"]) for w in waiting] == [("local", i) for i in (1, 2, 3, 4)]
    assert [w["run_id"] for w in waiting] == ids[2:], "two start at once, four wait"
    assert "local:0 held by seglab run" in waiting[0]["why"]
    assert "position 1 on local" in seglab("queue", "up", ids[5], "3").stdout
    workstation.send_signal(signal.SIGKILL)
    workstation.wait()

    # No seglab command from here on: the host's runner alone starts the rest.
    started = grid_ran_once(runs, 6, 2, 900)
    journal = queue.journal()
    assert len(started) == len(set(started)) == 4
    assert started[0] == ids[5], "moved to the front, started first"
    assert {e["run_id"] for e in journal if e["kind"] == "ended"} == set(started)
    assert set(started) < set(ids)

    rows = {row["run_id"]: row for row in ps()}
    assert set(rows) == set(ids)
    for row in rows.values():
        assert row["status"] == "finished", row
        assert row["best_miou"] is not None and 0 < row["best_miou"] <= 1
        assert row["host"] == "local" and len(row["gpus"]) == 1
    assert len({row["gpus"][0] for row in rows.values()}) == 2
    assert not os.path.exists(queue.pid_file)


def _gpu_of(run_dir: Path) -> str:
    labels = json.loads((run_dir / PROCESS_FILE).read_text())["labels"]
    gpu: str = labels["seglab.gpus"]
    return gpu


def test_two_workstations_submitting_at_once_never_share_a_gpu(
    isolated_xdg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = standin_host(isolated_xdg, monkeypatch, 2)
    argv = [
        sys.executable,
        "-m",
        "seglab",
        "run",
        str(RECIPES / "tiny-grid.yaml"),
        "--on",
        "local",
        "--runtime",
        "process",
    ]
    submitters = []
    for name in ("one", "two"):
        env = {**os.environ, "XDG_STATE_HOME": str(isolated_xdg / f"state-{name}")}
        submitters.append(
            subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        )
    ids = [line for p in submitters for line in p.communicate(timeout=300)[0].split()]
    assert all(p.returncode == 0 for p in submitters)
    assert len(set(ids)) == 4

    queue = HostQueue(runs)
    ended = wait_for(
        lambda: len(ended_runs(runs)) == 4 and ended_runs(runs), 900, "four ended runs"
    )
    wait_for(lambda: not queue.pid_file.exists(), 60, "the runner to exit")
    for records in ended:
        assert sum(r["kind"] == "start" for r in records) == 1, "each variant ran once"
    by_gpu: dict[str, list[tuple[float, float]]] = {}
    for run_dir in runs.glob("*/events.jsonl"):
        records = events_file(str(run_dir.parent))
        by_gpu.setdefault(_gpu_of(run_dir.parent), []).append(
            (records[0]["time"], records[-1]["time"])
        )
    assert len(by_gpu) == 2
    for gpu, used in by_gpu.items():
        assert most_at_once(used) == 1, f"{gpu} booked twice: {used}"
    assert sorted(p.parent.name for p in runs.glob("*/events.jsonl")) == sorted(ids)
