"""Run lifecycle on the process runtime, through the real CLI and the real trainer.

run, ps, logs, metrics, stop, resume, kill, rm, reattach after a SIGKILLed seglab, and two
placements racing for one GPU (the stand-in nvidia-smi plays the driver).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from seglab.events import PREFIX, parse_line
from tests.e2e.runlib import RECIPES, REPO, events_file, final, ps, run_row, seglab, wait_for
from tests.standin import use_standin

pytestmark = pytest.mark.slow


def test_stop_writes_last_checkpoint_and_resume_continues() -> None:
    (run_id,) = seglab(
        "run", str(RECIPES / "tiny-long.yaml"), "--on", "local:cpu", "--runtime", "process"
    ).stdout.split()
    row = wait_for(
        lambda: (r := run_row(run_id))["iteration"] and r["iteration"] >= 6 and r,
        300,
        "a few iterations",
    )
    run_dir = Path(row["run_dir"])

    stopped = seglab("stop", run_id, "--timeout", "60")
    assert f"{run_id}: stopped" in stopped.stdout
    row = run_row(run_id)
    assert row["status"] == "stopped"
    assert row["exit_code"] == 143  # 128 + SIGTERM after a clean stop
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    records = events_file(str(run_dir))
    assert records[-1]["kind"] == "end" and records[-1]["status"] == "stopped"
    saved = max(r["iter"] for r in records if r["kind"] == "checkpoint")
    assert saved >= 6

    resumed = seglab("resume", run_id)
    assert f"{run_id}: " in resumed.stdout
    wait_for(
        lambda: sum(r["kind"] == "start" for r in events_file(str(run_dir))) == 2,
        120,
        "the resumed trainer's start event",
    )
    starts = [r for r in events_file(str(run_dir)) if r["kind"] == "start"]
    assert starts[1]["resumed_from"] == saved
    first_train = wait_for(
        lambda: [
            r
            for r in events_file(str(run_dir))
            if r["kind"] == "train" and r["seq"] > starts[1]["seq"]
        ],
        120,
        "training after the resume",
    )
    assert first_train[0]["iter"] > saved
    seqs = [r["seq"] for r in events_file(str(run_dir))]
    assert seqs == sorted(set(seqs)), "seq strictly increases across the resume"

    killed = seglab("kill", run_id)
    assert f"{run_id}: killed" in killed.stdout
    seglab("rm", run_id, "--purge")
    assert not run_dir.exists()
    assert all(r["run_id"] != run_id for r in ps())


def test_grid_in_parallel_reattached_after_seglab_is_sigkilled(isolated_xdg: Path) -> None:
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "seglab",
            "run",
            str(RECIPES / "tiny-grid.yaml"),
            "--on",
            "local:cpu",
            "--runtime",
            "process",
            "--wait",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert waiter.stdout is not None
    ids = [waiter.stdout.readline().strip() for _ in range(2)]
    # Both variants run at once: each is running before either has ended.
    running = wait_for(
        lambda: all(run_row(i)["status"] == "running" for i in ids) and ps(), 120, "both running"
    )
    assert {r["variant"] for r in running} == {"lr=low", "lr=high"}
    assert all(r["runtime"] == "process" for r in running)
    waiter.send_signal(signal.SIGKILL)
    waiter.wait()

    # The registry is only a cache: throw it away entirely.
    state = Path(os.environ["XDG_STATE_HOME"]) / "seglab"
    for path in state.glob("registry.sqlite3*"):
        path.unlink()

    followed = seglab("logs", "--events", "-f", ids[0], timeout=600).stdout.splitlines()
    event_lines = [line for line in followed if PREFIX in line]
    kinds = [parse_line(line).kind for line in event_lines]  # type: ignore[union-attr]
    assert kinds[0] == "start" and kinds[-1] == "end" and "eval" in kinds

    rows = wait_for(
        lambda: all(final(i) for i in ids) and ps(), 600, "the runs to be found again and to end"
    )
    found = {r["run_id"]: r for r in rows}
    assert set(found) == set(ids)
    for run_id in ids:
        row = found[run_id]
        assert row["status"] == "finished", row
        assert row["exit_code"] == 0
        assert row["best_miou"] is not None and 0 < row["best_miou"] <= 1
        assert row["iteration"] == row["total_iterations"] == 8
        assert row["progress"] == 1.0
        on_disk = events_file(row["run_dir"])
        metrics = json.loads(seglab("metrics", run_id, "--json").stdout)
        assert metrics["best_miou"] == row["best_miou"]
        assert [e["iter"] for e in metrics["evals"]] == [4, 8]
        assert metrics["class_names"] == ["background", "shape_1", "shape_2"]
        # Nothing lost or duplicated: the registry holds exactly the run dir's events.
        assert len(metrics["evals"]) == sum(r["kind"] == "eval" for r in on_disk)
        assert len(metrics["loss"]) == sum(r["kind"] == "train" for r in on_disk)
    assert seglab("ps", "--json").stdout.strip() == "[]"  # nothing active any more


def _standin_host(config_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    standin = use_standin(monkeypatch, gpus=2, phase="idle")
    hosts = config_home / "seglab" / "hosts.yaml"
    hosts.parent.mkdir(parents=True, exist_ok=True)
    hosts.write_text(f"hosts:\n  local:\n    telemetry: nvidia-smi\n    nvidia_smi: {standin}\n")


def test_two_placements_race_for_one_gpu(
    isolated_xdg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _standin_host(Path(os.environ["XDG_CONFIG_HOME"]), monkeypatch)
    argv = [
        sys.executable,
        "-m",
        "seglab",
        "run",
        str(RECIPES / "tiny-long.yaml"),
        "--on",
        "local:0",
        "--runtime",
        "process",
        "--no-queue",
    ]
    racers = [
        subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in racers]
    winners = [r for r in results if r[0] == 0]
    losers = [r for r in results if r[0] != 0]
    assert len(winners) == 1 and len(losers) == 1, results
    winner_id = winners[0][1].strip()
    assert f"held by seglab run {winner_id}" in losers[0][2]
    row = run_row(winner_id)
    assert row["host"] == "local" and len(row["gpus"]) == 1
    assert row["gpus"][0].startswith("GPU-")

    # Without --no-queue the loser waits in the queue and starts once the GPU is free.
    queued_id = seglab(
        "run", str(RECIPES / "tiny-long.yaml"), "--on", "local:0", "--runtime", "process"
    ).stdout.strip()
    assert run_row(queued_id)["status"] == "queued"
    seglab("kill", winner_id)
    started = wait_for(
        lambda: run_row(queued_id)["status"] in ("starting", "running") and run_row(queued_id),
        120,
        "the queued run to start",
    )
    assert started["gpus"] == row["gpus"]
    seglab("kill", queued_id)
