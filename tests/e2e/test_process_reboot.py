"""Process runs come back after their machine restarts: the process runtime is its own
engine, and the host's queue runner goes on with what waited.

A reboot is done by hand, as it acts on a run: every seglab process ends (the workstation
and the host's runner are SIGKILLed), the trainer ends as a shutdown ends it (SIGTERM: it
checkpoints and exits 143; or a power cut: SIGKILL to it and its wrapper, no exit code),
and the run's ``process.json`` then names an earlier boot (a reboot changes
``/proc/sys/kernel/random/boot_id``, which the runtime compares). After that, one seglab
command (`seglab ps`, as a user's first look would be) and nothing more: the run starts
again and resumes from ``last.pt``, the runner starts the variant that waited, and every
variant finishes once.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from seglab.hostqueue.store import HostQueue
from seglab.runtime.procwrap import EXIT_FILE, PROCESS_FILE, proc_start_time
from seglab.runtime.spec import ENGINE_RESTARTS
from tests.e2e.runlib import RECIPES, events_file, ps, seglab, standin_host, wait_for

pytestmark = pytest.mark.slow


def _of_kind(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in events_file(str(run_dir)) if r["kind"] == kind]


def _finished(run_dir: Path) -> bool:
    """Whether the run's latest attempt ended, finished (its end after its last start)."""
    records = events_file(str(run_dir))
    starts = [r["seq"] for r in records if r["kind"] == "start"]
    ends = [r for r in records if r["kind"] == "end"]
    return bool(
        starts and ends and ends[-1]["seq"] > starts[-1] and ends[-1]["status"] == "finished"
    )


def _gone(pid: int, start_time: int) -> bool:
    try:
        return proc_start_time(pid) != start_time
    except (FileNotFoundError, ProcessLookupError):
        return True


def _reboot(run_dir: Path, queue: HostQueue, how: str) -> None:
    """Everything a reboot does to a process run and the host's runner (see the module)."""
    runner = int(queue.pid_file.read_text())
    os.kill(runner, signal.SIGKILL)
    record = json.loads((run_dir / PROCESS_FILE).read_text())
    pid, wrapper = int(record["pid"]), int(record["wrapper_pid"])
    if how == "shutdown":
        os.killpg(pid, signal.SIGTERM)  # the trainer checkpoints and exits 143
        wait_for((run_dir / EXIT_FILE).is_file, 120, "the trainer's clean stop")
        assert (run_dir / EXIT_FILE).read_text().strip() == str(128 + signal.SIGTERM)
    else:
        os.kill(wrapper, signal.SIGKILL)
        os.killpg(pid, signal.SIGKILL)
    wait_for(
        lambda: (
            _gone(pid, int(record["start_time"]))
            and _gone(wrapper, int(record["wrapper_start_time"]))
        ),
        30,
        "the run's processes to end",
    )
    wait_for(lambda: not queue.has_runner(), 30, "the runner's lock to go")
    record = json.loads((run_dir / PROCESS_FILE).read_text())
    record["boot_id"] = "an-earlier-boot"
    (run_dir / PROCESS_FILE).write_text(json.dumps(record))


@pytest.mark.parametrize("how", ["shutdown", "power cut"])
def test_process_runs_come_back_after_the_machine_restarts(
    isolated_xdg: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    runs = standin_host(isolated_xdg, monkeypatch, 1)
    grid = tmp_path / "reboot.yaml"
    grid.write_text(
        f"extends: {RECIPES / 'tiny.yaml'}\nname: reboot\n"
        "train: {epochs: 8, eval_interval: 8, checkpoint_interval: 4}\n"
        "ablate:\n  lr:\n    a: {train.optimizer.lr: 0.001}\n    b: {train.optimizer.lr: 0.002}\n"
    )
    first, second = seglab("run", str(grid), "--on", "local", "--runtime", "process").stdout.split()
    queue = HostQueue(runs)
    assert [item["run_id"] for item in queue.items()] == [second], "one GPU: b waits"
    run_dir = Path(next(r["run_dir"] for r in ps() if r["run_id"] == first))
    wait_for(lambda: _of_kind(run_dir, "checkpoint"), 300, "a checkpoint of the first run")
    _reboot(run_dir, queue, how)
    saved = max(r["iter"] for r in _of_kind(run_dir, "checkpoint") if r["path"].endswith("last.pt"))

    # The user's first look after the reboot: the run is going again.
    rows = {row["run_id"]: row for row in ps()}
    assert rows[first]["status"] == "running", rows[first]
    assert "started again once by seglab after the machine restarted" in rows[first]["message"]
    assert f"at most {ENGINE_RESTARTS}" in rows[first]["message"]
    assert rows[second]["status"] == "queued"

    # No seglab command from here on: the run resumes and finishes, then the runner
    # (started again by that look) starts the variant that waited.
    wait_for(lambda: _finished(run_dir), 600, "the first run to finish after its resume")
    starts = _of_kind(run_dir, "start")
    assert [s["resumed_from"] for s in starts] == [None, saved]
    assert "resuming at iter" in (run_dir / "train.log").read_text()
    wait_for(
        lambda: any(e["kind"] == "ended" and e["run_id"] == second for e in queue.journal()),
        600,
        "the waiting variant to run and end",
    )
    journal = queue.journal()
    assert [e["run_id"] for e in journal if e["kind"] == "started"] == [second]
    wait_for(lambda: not queue.pid_file.exists(), 60, "the runner to exit")

    rows = {row["run_id"]: row for row in ps()}
    for run_id in (first, second):
        row = rows[run_id]
        assert (row["status"], row["exit_code"]) == ("finished", 0), row
        assert row["best_miou"] is not None
    assert len(_of_kind(Path(rows[second]["run_dir"]), "start")) == 1
