"""A seglab SIGKILLed at each step of run, resume, stop, kill and rm (process runtime, one
stand-in GPU reserved per run, and a two-member run): the next `seglab ps` shows the run
with its true status or not at all, stop/kill/rm handle it, no reservation outlives its
run, and no process runs untracked."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from seglab import paths
from seglab.runtime.process import ProcessRuntime
from tests.e2e.runlib import RECIPES, events_file, seglab, wait_for
from tests.faults.crashlib import (
    consistent,
    crash,
    events_whole,
    held,
    leftovers,
    only_run,
    process_runs,
    rows,
    run_dirs,
    wait_status,
)
from tests.standin import use_standin

pytestmark = [pytest.mark.faults, pytest.mark.slow]

RUN = ("run", str(RECIPES / "tiny-long.yaml"), "--on", "local:0", "--runtime", "process")


@pytest.fixture(autouse=True)
def standin_gpus(isolated_xdg: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Two idle stand-in GPUs on the local host, so that runs reserve one."""
    standin = use_standin(monkeypatch, gpus=2, phase="idle")
    hosts = Path(os.environ["XDG_CONFIG_HOME"]) / "seglab" / "hosts.yaml"
    hosts.parent.mkdir(parents=True, exist_ok=True)
    hosts.write_text(f"hosts:\n  local:\n    telemetry: nvidia-smi\n    nvidia_smi: {standin}\n")
    yield
    runtime = ProcessRuntime(paths.default_runs_root())
    for info in runtime.list({"seglab.run_id": None}):  # a failed test's runs
        if info.state.active:
            runtime.kill(info.ref)


def _running() -> str:
    """A run whose trainer is training (its SIGTERM handler in place)."""
    (run_id,) = seglab(*RUN).stdout.split()
    wait_for(lambda: (rows()[run_id]["iteration"] or 0) >= 2, 180, f"{run_id} to train")
    return run_id


def _kill_and_remove(run_id: str) -> None:
    """The run is manageable: kill ends it as killed, rm forgets it and its process."""
    assert seglab("kill", run_id).stdout.strip() == f"{run_id}: killed"
    row = consistent()[run_id]
    assert row["status"] == "killed"
    assert held() == {}
    assert events_whole(run_id, row["run_dir"]) > 0
    seglab("rm", run_id)
    assert run_id not in consistent()
    assert leftovers(run_id) == []


@pytest.mark.parametrize("step", ["launch.begin", "launch.prepared", "launch.row"])
def test_a_run_killed_before_its_process_starts_leaves_nothing(step: str) -> None:
    crash(step, *RUN)
    assert consistent() == {}
    assert held() == {}
    assert process_runs() == []
    assert run_dirs() == []


@pytest.mark.parametrize("step", ["launch.engine", "launch.handle"])
def test_a_run_killed_after_its_process_started_is_adopted(step: str) -> None:
    crash(step, *RUN)
    found = consistent()
    run_id = only_run()
    assert found[run_id]["status"] in ("starting", "running")
    assert list(held().values()) == [run_id]
    wait_for(lambda: (rows()[run_id]["iteration"] or 0) >= 1, 180, f"{run_id} to train")
    _kill_and_remove(run_id)


def test_a_stop_killed_before_its_signal_leaves_the_run_running() -> None:
    run_id = _running()
    crash("stop.begin", "stop", run_id, "--timeout", "60")
    assert consistent()[run_id]["status"] == "running"
    assert list(held().values()) == [run_id]
    assert seglab("stop", run_id, "--timeout", "60").stdout.strip() == f"{run_id}: stopped"
    assert consistent()[run_id]["status"] == "stopped"
    assert held() == {}


def test_a_stop_killed_after_its_signal_ends_the_run_stopped() -> None:
    run_id = _running()
    crash("stop.signalled", "stop", run_id, "--timeout", "60")
    consistent()
    row = wait_status(run_id, "stopped", "failed", "killed", "finished")
    assert row["status"] == "stopped"
    assert consistent()[run_id]["status"] == "stopped"
    assert held() == {}
    assert events_whole(run_id, row["run_dir"]) > 0
    seglab("rm", run_id)


@pytest.mark.parametrize("step", ["kill.begin", "kill.signalled"])
def test_a_kill_killed_midway_is_finished_and_the_run_is_killed(step: str) -> None:
    run_id = _running()
    crash(step, "kill", run_id)
    row = consistent()[run_id]
    assert (row["status"], row["exit_code"]) == ("killed", 137)
    assert events_whole(run_id, row["run_dir"]) > 0
    assert held() == {}
    assert [state for _, state in process_runs()] == ["exited"]
    seglab("rm", run_id)
    assert leftovers(run_id) == []


@pytest.mark.parametrize("step", ["rm.begin", "rm.runtime", "rm.forgotten"])
def test_an_rm_killed_midway_is_finished(step: str) -> None:
    run_id = _running()
    crash(step, "rm", "--force", "--purge", run_id)
    assert run_id not in consistent()
    assert held() == {}
    assert process_runs() == []
    assert run_dirs() == []


@pytest.mark.parametrize(
    ("step", "status"),
    [
        ("resume.reserved", "stopped"),
        ("resume.removed", "stopped"),
        ("launch.row", "stopped"),
        ("launch.engine", "running"),
    ],
)
def test_a_resume_killed_midway_is_rolled_back_or_adopted(step: str, status: str) -> None:
    run_id = _running()
    seglab("stop", run_id, "--timeout", "60")
    crash(step, "resume", run_id)
    row = consistent()[run_id]
    if status == "running":
        assert row["status"] in ("starting", "running")
        assert list(held().values()) == [run_id]
    else:
        assert row["status"] == "stopped"
        assert held() == {}
        seglab("resume", run_id)
    wait_for(
        lambda: sum(e["kind"] == "start" for e in events_file(row["run_dir"])) == 2,
        180,
        "the resumed trainer's start event",
    )
    _kill_and_remove(run_id)


def test_a_two_member_run_killed_between_its_members_starts_whole_or_not_at_all() -> None:
    crash(
        "launch.member",
        "run",
        str(RECIPES / "tiny-nodes.yaml"),
        "--on",
        "local:cpu,local:cpu",
        "--runtime",
        "process",
    )
    found = consistent()
    if not found:  # rolled back: the member that had started is gone
        assert [state for _, state in process_runs() if state == "running"] == []
        return
    (run_id,) = found
    assert len(found[run_id]["members"]) == 2
    assert seglab("kill", run_id).stdout.strip() == f"{run_id}: killed"
    seglab("rm", run_id)
    assert rows() == {}
    assert process_runs() == []
