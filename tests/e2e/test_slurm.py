"""Slurm runs through the real CLI on the real single-node cluster that .ci/slurm.sh starts.

The tiny grid becomes one job array (one task per variant) asking one GRES GPU each (the
CI node has two fake ones, so CUDA_VISIBLE_DEVICES is set and the trainer runs on CPU);
`seglab ps` shows each task pending (with Slurm's reason), running, then finished with its
best mIoU; `seglab stop` of one task checkpoints and ends it and `seglab resume` starts it
again from last.pt; a task requeued by Slurm resumes from last.pt; the time-limit signal
gives the trainer its checkpoint; a failing job keeps its exit code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seglab import recipes
from seglab.events import PREFIX
from tests.e2e.runlib import RECIPES, events_file, final, ps, run_row, seglab, wait_for
from tests.e2e.sshd import Lab

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _slurm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {out.returncode}: {out.stderr}")
    return out


@pytest.fixture(scope="module")
def slurm_up() -> None:
    """Skip unless sbatch exists and a controller answers."""
    if shutil.which("sbatch") is None:
        pytest.skip("sbatch is not installed; .ci/slurm.sh WORKDIR installs and starts Slurm")
    try:
        ping = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=15, check=False
        )
        answer = (ping.stdout + ping.stderr).strip()
    except subprocess.TimeoutExpired:
        answer = "scontrol ping got no answer within 15 s"
    if "is UP" not in answer:
        pytest.skip(
            f"no Slurm controller answers (SLURM_CONF={os.environ.get('SLURM_CONF')}): "
            f"{answer}; run .ci/slurm.sh WORKDIR and export "
            "SLURM_CONF=WORKDIR/slurm.conf"
        )


@pytest.fixture
def cluster(slurm_up: None, isolated_xdg: Path, tmp_path: Path) -> Iterator[Path]:
    """hosts.yaml with a `kind: slurm` host `cluster` (this machine is its login node);
    yields its runs root and cancels whatever the test left in the queue."""
    runs_root = tmp_path / "runs"
    config = isolated_xdg / "config" / "seglab" / "hosts.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        textwrap.dedent(f"""
        hosts:
          cluster:
            kind: slurm
            runs_root: {runs_root}
            python: {sys.executable}
            env_setup: [export OMP_NUM_THREADS=1]
            time_limit: "30"
    """)
    )
    yield runs_root
    for record in runs_root.glob("*/slurm.json"):
        jobspec = json.loads(record.read_text())["jobspec"]
        _slurm("scancel", jobspec, check=False)


def _jobspec(run_dir: str) -> str:
    spec: str = json.loads((Path(run_dir) / "slurm.json").read_text())["jobspec"]
    return spec


def _job(jobspec: str) -> dict[str, str]:
    line = _slurm("scontrol", "-o", "show", "job", jobspec).stdout.splitlines()[0]
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def _long_grid(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-long-grid.yaml"
    path.write_text(
        textwrap.dedent(f"""
        extends: {RECIPES / "tiny-long.yaml"}
        name: tiny-long-grid
        ablate:
          lr:
            low: {{train.optimizer.lr: 0.001}}
            high: {{train.optimizer.lr: 0.003}}
    """)
    )
    return path


def test_grid_is_one_job_array_pending_running_finished(cluster: Path) -> None:
    # Hold both fake GPUs so the array's tasks wait with a reason first.
    blocker = _slurm(
        "sbatch",
        "--parsable",
        "--gres=gpu:2",
        "--job-name=seglab-test-blocker",
        "--output=/dev/null",
        "--wrap",
        "sleep 300",
    ).stdout.strip()
    try:
        started = json.loads(
            seglab("run", str(RECIPES / "tiny-grid.yaml"), "--on", "cluster", "--json").stdout
        )
        ids = [row["run_id"] for row in started]
        assert {row["variant"] for row in started} == {"lr=low", "lr=high"}
        assert all(row["runtime"] == "slurm" and row["host"] == "cluster" for row in started)
        jobspecs = [_jobspec(row["run_dir"]) for row in started]
        array_ids = {spec.split("_")[0] for spec in jobspecs}
        assert len(array_ids) == 1, f"one job array for the grid, got {jobspecs}"
        assert sorted(spec.split("_")[1] for spec in jobspecs) == ["0", "1"]
        job = _job(jobspecs[0])
        assert job["TresPerNode"] == "gres:gpu:1" and job["Requeue"] == "1"
        assert job["TimeLimit"] == "00:30:00"
        assert job["Comment"].startswith("seglab:") and ids[0] in job["Comment"]

        waiting = ("slurm pending (Resources)", "slurm pending (Priority)")
        # Slurm gives the reason once its scheduler has looked at the new jobs.
        rows = wait_for(
            lambda: all(run_row(i)["message"] in waiting for i in ids) and ps(),
            60,
            "the tasks to wait with a reason",
        )
        for row in rows:
            if row["run_id"] in ids:
                assert row["status"] == "starting" and row["message"] in waiting, row
        text = seglab("ps").stdout
        assert any(reason in text for reason in waiting)

        # Stopping a task that is still pending cancels it: stopped, never ran.
        (extra,) = seglab(
            "run", str(RECIPES / "tiny-grid.yaml"), "--variant", "lr=low", "--on", "cluster"
        ).stdout.split()
        wait_for(lambda: run_row(extra)["message"] in waiting, 60, "the single job to wait")
        assert f"{extra}: stopped" in seglab("stop", extra).stdout
        row = run_row(extra)
        assert row["status"] == "stopped" and row["message"] == "cancelled while pending in Slurm"
        assert _job(_jobspec(row["run_dir"]))["JobState"] == "CANCELLED"
    finally:
        _slurm("scancel", blocker)

    wait_for(
        lambda: all(run_row(i)["status"] in ("running", "finished") for i in ids),
        120,
        "both tasks to start once the GPUs are free",
    )
    # The registry is only a cache: without it, seglab finds the jobs again from the run dirs.
    for path in (Path(os.environ["XDG_STATE_HOME"]) / "seglab").glob("registry.sqlite3*"):
        path.unlink()
    assert {r["run_id"] for r in ps() if r["runtime"] == "slurm"} == {*ids, extra}
    followed = seglab("logs", "--events", "-f", ids[0], timeout=600).stdout.splitlines()
    kinds = [json.loads(line.split(PREFIX, 1)[1])["kind"] for line in followed if PREFIX in line]
    assert kinds[0] == "start" and kinds[-1] == "end" and "eval" in kinds
    rows = {
        r["run_id"]: r
        for r in wait_for(lambda: all(final(i) for i in ids) and ps(), 600, "both tasks to end")
    }
    for run_id, spec in zip(ids, jobspecs, strict=True):
        row = rows[run_id]
        assert row["status"] == "finished", row
        assert row["exit_code"] == 0
        assert row["best_miou"] is not None and 0 < row["best_miou"] <= 1
        records = events_file(row["run_dir"])
        assert max(r["miou"] for r in records if r["kind"] == "eval") == row["best_miou"]
        assert records[-1]["kind"] == "end" and records[-1]["status"] == "finished"
        log = seglab("logs", "--events", run_id).stdout
        assert "@seglab" in log  # the job's --output is the run dir's train.log
        assert _job(spec)["JobState"] == "COMPLETED"
    assert seglab("ps", "--json").stdout.strip() == "[]"


def _iteration(row: dict[str, Any], at_least: int) -> dict[str, Any] | None:
    return row if row["iteration"] is not None and row["iteration"] >= at_least else None


def test_stop_checkpoints_one_task_and_requeue_resumes_from_last_pt(
    cluster: Path, tmp_path: Path
) -> None:
    started = json.loads(
        seglab("run", str(_long_grid(tmp_path)), "--on", "cluster:cpu", "--json").stdout
    )
    stopped_id, requeued_id = (row["run_id"] for row in started)
    assert "TresPerNode" not in _job(_jobspec(started[0]["run_dir"]))  # cpu: no GRES
    wait_for(
        lambda: all(_iteration(run_row(i), 4) for i in (stopped_id, requeued_id)),
        300,
        "both tasks to train a few iterations",
    )

    # seglab stop: SIGTERM through scancel; the trainer writes last.pt and ends "stopped".
    stop_issued = time.time()
    assert f"{stopped_id}: stopped" in seglab("stop", stopped_id, "--timeout", "60").stdout
    row = run_row(stopped_id)
    assert row["status"] == "stopped" and row["exit_code"] == 0, row  # COMPLETED for Slurm
    run_dir = Path(row["run_dir"])
    last = run_dir / "checkpoints" / "last.pt"
    assert last.is_file() and last.stat().st_mtime >= stop_issued
    records = events_file(str(run_dir))
    assert records[-1]["kind"] == "end" and records[-1]["status"] == "stopped"
    stopped_at = max(r["iter"] for r in records if r["kind"] == "checkpoint")
    assert _job(_jobspec(str(run_dir)))["JobState"] == "COMPLETED"
    assert run_row(requeued_id)["status"] == "running"  # the other task runs on

    # Slurm requeues the other task (as on preemption): it checkpoints, waits, restarts.
    other_dir = run_row(requeued_id)["run_dir"]
    spec = _jobspec(other_dir)
    _slurm("scontrol", "requeue", spec)
    wait_for(lambda: _job(spec)["JobState"] == "PENDING", 120, "the requeued task to wait")
    # A requeued job waits two minutes (BeginTime) before it may start again; skip that.
    _slurm("scontrol", "update", f"JobId={spec}", "StartTime=now")
    wait_for(
        lambda: sum(r["kind"] == "start" for r in events_file(other_dir)) == 2,
        300,
        "the requeued task's second start event",
    )
    records = events_file(other_dir)
    second = [i for i, r in enumerate(records) if r["kind"] == "start"][1]
    before = records[:second]
    assert before[-1]["kind"] == "end" and before[-1]["status"] == "stopped"  # checkpointed
    saved = max(r["iter"] for r in before if r["kind"] == "checkpoint")
    assert records[second]["resumed_from"] == saved > 0
    assert int(_job(spec)["Restarts"]) == 1
    row = wait_for(
        lambda: (r := run_row(requeued_id))["status"] == "running" and r,
        60,
        "seglab to show the restarted task running",
    )
    assert row["message"] == "slurm running (restarts 1)"
    seglab("stop", requeued_id, "--timeout", "60")
    assert run_row(requeued_id)["status"] == "stopped"

    # seglab resume of the stopped task: a new job in the same run dir, from last.pt.
    old_spec = _jobspec(str(run_dir))
    assert f"{stopped_id}: " in seglab("resume", stopped_id).stdout
    new_spec = _jobspec(str(run_dir))
    assert new_spec != old_spec and "_" not in new_spec  # one plain job this time
    wait_for(
        lambda: sum(r["kind"] == "start" for r in events_file(str(run_dir))) == 2,
        300,
        "the resumed job's start event",
    )
    start = [r for r in events_file(str(run_dir)) if r["kind"] == "start"][1]
    assert start["resumed_from"] == stopped_at
    seglab("stop", stopped_id, "--timeout", "60")
    assert run_row(stopped_id)["status"] == "stopped"


def test_failed_job_exit_code_and_completion_log(slurm_up: None, tmp_path: Path) -> None:
    from seglab.runtime.slurm import SlurmRuntime, split_ref
    from seglab.runtime.spec import LaunchSpec

    runtime = SlurmRuntime(tmp_path)
    run_dir = tmp_path / "fails"
    run_dir.mkdir()
    spec = LaunchSpec(
        name="fails",
        image="none",
        log_path=run_dir / "train.log",
        command=("sh", "-c", "echo partial; printf 'no newline'; exit 3"),
        labels={"seglab.run_id": "fails"},
    )
    ref = runtime.launch(spec)
    assert runtime.wait(ref, timeout=120) == 3
    state = runtime.inspect(ref)
    assert state.status == "exited" and not state.active
    assert state.error is not None and "failed (exit 3" in state.error
    assert [line.text for line in runtime.logs(ref)] == ["partial", "no newline"]
    assert [line.text for line in runtime.logs(ref, tail=1)] == ["no newline"]
    # The job-completion log (JobCompType=jobcomp/filetxt) holds the same end, for when the
    # controller has forgotten the job (MinJobAge).
    jobspec, _ = split_ref(ref)
    recorded = wait_for(lambda: runtime.completed(jobspec), 30, "the job-completion record")
    assert (recorded.state, recorded.exit_code) == ("FAILED", 3)
    assert runtime.snapshot()[jobspec].state == "FAILED"
    (info,) = runtime.list({"seglab.run_id": "fails"})
    assert info.ref == ref and info.state.exit_code == 3
    runtime.remove(ref)
    assert runtime.list() == []


def test_time_limit_signal_lets_the_trainer_checkpoint(slurm_up: None, tmp_path: Path) -> None:
    from seglab.hosts import SlurmOptions
    from seglab.runtime.slurm import SlurmRuntime, split_ref
    from seglab.runtime.spec import LaunchSpec

    # A 3-minute limit with SIGTERM asked 90 s before it. Slurm signals within its
    # resolution (seen up to a minute early): 30-90 s in, after the trainer is up and well
    # before the limit.
    runtime = SlurmRuntime(tmp_path, SlurmOptions(time_limit="3"), signal_before_limit=90)
    run_dir = tmp_path / "limited"
    run_dir.mkdir()
    (variant,) = recipes.load(RECIPES / "tiny-long.yaml").variants
    (run_dir / "recipe.yaml").write_text(variant.recipe.to_yaml())
    spec = LaunchSpec(
        name="limited",
        image="none",
        log_path=run_dir / "train.log",
        command=(
            sys.executable,
            "-m",
            "seglab.train",
            "--config",
            str(run_dir / "recipe.yaml"),
            "--run-dir",
            str(run_dir),
        ),
        env={"OMP_NUM_THREADS": "1"},
    )
    ref = runtime.launch(spec)
    started = time.monotonic()
    assert runtime.wait(ref, timeout=300) == 0
    assert time.monotonic() - started < 180
    jobspec, _ = split_ref(ref)
    job = _job(jobspec)
    assert job["JobState"] == "COMPLETED" and job["TimeLimit"] == "00:03:00"
    records = events_file(str(run_dir))
    assert records[-1]["kind"] == "end" and records[-1]["status"] == "stopped"
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert any(r["kind"] == "checkpoint" for r in records)


@pytest.mark.sshd
def test_a_login_node_reached_over_ssh(
    slurm_up: None, lab1: Lab, isolated_xdg: Path, tmp_path: Path
) -> None:
    # The cluster's login node is `lab1` (this machine's sshd): every Slurm command and
    # every file of its runs root go through the SSH connection. A non-interactive SSH
    # session has no SLURM_CONF, so env_setup exports it (as `module load slurm` would).
    runs_root = tmp_path / "login-runs"
    lab1.hosts_yaml.write_text(
        textwrap.dedent(f"""
        hosts:
          cluster:
            kind: slurm
            ssh: lab1
            runs_root: {runs_root}
            python: {sys.executable}
            env_setup: [export SLURM_CONF={os.environ["SLURM_CONF"]}, export OMP_NUM_THREADS=1]
            time_limit: "30"
    """)
    )
    try:
        started = json.loads(
            seglab("run", str(RECIPES / "tiny-grid.yaml"), "--on", "cluster", "--json").stdout
        )
        ids = [row["run_id"] for row in started]
        jobspecs = [_jobspec(row["run_dir"]) for row in started]
        assert len({spec.split("_")[0] for spec in jobspecs}) == 1, jobspecs  # one array
        assert all(Path(row["run_dir"]).is_relative_to(runs_root) for row in started)
        rows = {
            r["run_id"]: r
            for r in wait_for(lambda: all(final(i) for i in ids) and ps(), 600, "both tasks to end")
        }
        for run_id in ids:
            assert rows[run_id]["status"] == "finished", rows[run_id]
            assert rows[run_id]["best_miou"] is not None
            log = seglab("logs", "--events", "--tail", "3", run_id).stdout.splitlines()
            assert len(log) == 3 and '"kind":"end"' in log[-1]  # read over SSH
        # Without the registry, the runs are found again by listing the login node's files.
        for path in (Path(os.environ["XDG_STATE_HOME"]) / "seglab").glob("registry.sqlite3*"):
            path.unlink()
        found = {r["run_id"]: r for r in ps()}
        assert set(found) == set(ids)
        assert all(found[i]["status"] == "finished" for i in ids)
    finally:
        for record in runs_root.glob("*/slurm.json"):
            _slurm("scancel", json.loads(record.read_text())["jobspec"], check=False)
