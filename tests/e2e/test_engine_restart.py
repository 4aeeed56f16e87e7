"""Docker runs survive a restart of their engine, through the real CLI, in the CI image.

A training container has the restart policy ``on-failure`` with ``ENGINE_RESTARTS``
retries, and the trainer exits 128 + the signal after a clean stop: the engine's
shutdown stops a run (SIGTERM, ``last.pt``, exit 143), and the engine starts it again
when it comes back, where the trainer resumes from ``last.pt``. A run its user stopped
(``docker stop``) is never started again; a run that fails on its own is retried
``ENGINE_RESTARTS`` times and then stays failed.

The first test restarts the private dockerd of ``$DOCKER_HOST`` (``.ci/docker.sh`` with
the same folder, which keeps the data root), and waits until it answers again before
going on: tests after it in the session use the same engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from docker.errors import DockerException

from seglab.runtime.spec import ENGINE_RESTARTS
from tests.e2e.runlib import (
    DEV_MOUNTS,
    RECIPES,
    REPO,
    events_file,
    final,
    run_row,
    seglab,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

POLICY = {"Name": "on-failure", "MaximumRetryCount": ENGINE_RESTARTS}
SETTLED = {"Name": "no", "MaximumRetryCount": 0}  # what seglab leaves on a run it saw end


@pytest.fixture(autouse=True)
def dev_mounts(ci_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give every container the venv's packages and the checkout (read-only)."""
    monkeypatch.setenv("SEGLAB_DEV_MOUNTS", DEV_MOUNTS)


def _container(docker_client: Any, run_id: str) -> Any:
    return docker_client.containers.get(f"seglab-{run_id}")


def _of_kind(run_dir: str, kind: str) -> list[dict[str, Any]]:
    return [r for r in events_file(run_dir) if r["kind"] == kind]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie nobody reaped yet has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _engine_answers(docker_client: Any) -> bool:
    try:
        return bool(docker_client.ping())
    except (DockerException, OSError):  # not up yet (the socket, or a 500 while it starts)
        return False


def restart_engine(docker_client: Any) -> None:
    """Stop the private dockerd of ``$DOCKER_HOST`` (its pid file), wait for it to exit,
    start it again with ``.ci/docker.sh`` on the same folder, wait until it answers."""
    socket = Path(os.environ["DOCKER_HOST"].removeprefix("unix://"))
    work = socket.parent
    pid_file = work / "dockerd.pid"
    if not pid_file.is_file():
        pytest.skip(f"{socket} is not a private dockerd started by .ci/docker.sh")
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not _alive(pid), 120, f"dockerd (pid {pid}) to exit")
    finally:
        # Whatever happened above, the engine must be back for the tests after this one.
        subprocess.run(
            ["bash", str(REPO / ".ci" / "docker.sh"), str(work)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        wait_for(lambda: _engine_answers(docker_client), 120, "the engine to answer again")


def _recipe(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"extends: {RECIPES / 'tiny.yaml'}\nname: {name}\n{body}")
    return path


@pytest.mark.timeout(1200)
def test_runs_resume_after_an_engine_restart_and_a_user_stop_stays_stopped(
    docker_client: Any, tmp_path: Path
) -> None:
    # Two runs long enough to be mid-way when the engine goes (40 iterations each).
    grid = _recipe(
        tmp_path,
        "survive",
        """\
train: {epochs: 10, eval_interval: 5, checkpoint_interval: 4}
ablate:
  lr:
    low: {train.optimizer.lr: 0.001}
    high: {train.optimizer.lr: 0.003}
""",
    )
    ids = seglab("run", str(grid), "--on", "local:cpu", "--runtime", "docker").stdout.split()
    (kept,) = seglab(
        "run", str(RECIPES / "tiny-long.yaml"), "--on", "local:cpu", "--runtime", "docker"
    ).stdout.split()
    assert len(ids) == 2, ids
    for run_id in (*ids, kept):
        assert _container(docker_client, run_id).attrs["HostConfig"]["RestartPolicy"] == POLICY
    dirs = {run_id: run_row(run_id)["run_dir"] for run_id in (*ids, kept)}

    # The user stops one run: seglab turns its restart policy off first, since Docker
    # starts an on-failure container that a `docker stop` ended again at its next start.
    wait_for(lambda: _of_kind(dirs[kept], "checkpoint"), 300, "a checkpoint of the kept run")
    assert f"{kept}: stopped" in seglab("stop", kept, "--timeout", "60").stdout
    stopped_row = run_row(kept)
    assert (stopped_row["status"], stopped_row["exit_code"]) == ("stopped", 143)
    attrs = _container(docker_client, kept).attrs
    assert attrs["HostConfig"]["RestartPolicy"] == SETTLED
    stopped_at = attrs["State"]["StartedAt"]

    wait_for(
        lambda: all((Path(dirs[i]) / "checkpoints" / "last.pt").is_file() for i in ids),
        300,
        "last.pt of both runs",
    )
    assert not any(_of_kind(dirs[i], "end") for i in ids), "a run ended before the restart"
    restart_engine(docker_client)

    # No seglab command from here until both have ended: the engine brings them back.
    wait_for(
        lambda: all(len(_of_kind(dirs[i], "start")) == 2 for i in ids),
        300,
        "both runs to start again after the engine restart",
    )
    wait_for(lambda: all(_ended(dirs[i]) for i in ids), 600, "both runs to finish")
    for run_id in ids:
        records = events_file(dirs[run_id])
        first, second = _of_kind(dirs[run_id], "start")
        assert first["resumed_from"] is None
        before = [r for r in records if r["seq"] < second["seq"]]
        saved = max(r["iter"] for r in before if r["kind"] == "checkpoint")
        assert second["resumed_from"] == saved > 0, (second, saved)
        assert records[-1]["kind"] == "end" and records[-1]["status"] == "finished"
        log = seglab("logs", run_id).stdout
        assert f"resuming at iter {saved}:" in log, log[-3000:]

    # The user's stop held through the restart: same container start, one attempt.
    container = _container(docker_client, kept)
    assert container.status == "exited"
    assert container.attrs["State"]["StartedAt"] == stopped_at
    assert container.attrs["RestartCount"] == 0
    assert len(_of_kind(dirs[kept], "start")) == 1

    # The trainers have said they finished; `seglab ps` shows it once their containers end.
    wait_for(lambda: all(final(i) for i in ids), 120, "both containers to end")
    rows = {r["run_id"]: r for r in json.loads(seglab("ps", "--all", "--json").stdout)}
    for run_id in ids:
        row = rows[run_id]
        assert (row["status"], row["exit_code"]) == ("finished", 0), row
        assert row["best_miou"] is not None and row["iteration"] == row["total_iterations"]
    assert (rows[kept]["status"], rows[kept]["exit_code"]) == ("stopped", 143)
    for run_id in (*ids, kept):
        seglab("rm", run_id, "--purge")


def _ended(run_dir: str) -> bool:
    """Whether the latest attempt in ``run_dir`` has ended (its end after its start)."""
    records = events_file(run_dir)
    starts = [r["seq"] for r in records if r["kind"] == "start"]
    ends = [r["seq"] for r in records if r["kind"] == "end"]
    return bool(ends and starts and ends[-1] > starts[-1])


def test_a_run_failing_on_its_own_is_retried_then_stays_failed(
    docker_client: Any, tmp_path: Path
) -> None:
    # Weights that are not there: the trainer fails in its set-up, every attempt.
    broken = _recipe(
        tmp_path, "broken", "model: {pretrained_backbone: /nonexistent/backbone.pth}\n"
    )
    (run_id,) = seglab(
        "run", str(broken), "--on", "local:cpu", "--runtime", "docker"
    ).stdout.split()
    assert _container(docker_client, run_id).attrs["HostConfig"]["RestartPolicy"] == POLICY
    # `seglab ps` shows it running (with the engine's restarts) until the engine gives up.
    row = wait_for(lambda: final(run_id), 600, "the failing run to end")
    container = _container(docker_client, run_id)
    assert container.status == "exited"
    # Recorded as failed, it stays failed: no later engine start brings it back.
    assert container.attrs["HostConfig"]["RestartPolicy"] == SETTLED
    assert container.attrs["RestartCount"] == ENGINE_RESTARTS
    assert (row["status"], row["exit_code"]) == ("failed", 1), row
    assert row["message"].startswith(f"restarted {ENGINE_RESTARTS} times by the engine\n")
    assert "pretrained backbone weights not found" in row["message"]
    ends = _of_kind(row["run_dir"], "end")
    assert [e["status"] for e in ends] == ["failed"] * (1 + ENGINE_RESTARTS)
    seglab("rm", run_id, "--purge")
