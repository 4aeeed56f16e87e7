"""`seglab tensorboard RUN` for a run on a host whose runs are processes (a Slurm login node
over real SSH): the host's own Python runs TensorBoard on its loopback over the run's tb/
folder, forwarded here; Ctrl-C (SIGTERM) stops it there and removes its log."""

from __future__ import annotations

import os
import sys
import time
import venv
from pathlib import Path

import psutil
import pytest

from seglab.workstation import Workstation
from tests.e2e.sshd import Lab
from tests.serving import (
    failing,
    finished_run_with_scalars,
    login_node,
    serving,
    tensorboard_scalars,
)

pytestmark = pytest.mark.sshd

RUN_ID = "seed.default.5e1f0a"
LOSSES = (1.0, 0.75, 0.5)
ENV_SETUP = "export SEGLAB_TENSORBOARD_TEST=1"


def _slurm_run_with_scalars(runs_root: Path) -> Path:
    """A finished Slurm run on `cluster` with a loss curve and a per-class IoU."""
    run_dir = runs_root / RUN_ID
    scalars = {"train/loss": list(enumerate(LOSSES)), "val/iou/road": [(2, 0.625)]}
    finished_run_with_scalars(run_dir, RUN_ID, scalars, host="cluster", runtime="slurm")
    return run_dir


def _servers(run_dir: Path) -> list[psutil.Process]:
    """TensorBoard processes over ``run_dir`` (the "remote" host is this machine)."""
    spec = f"{RUN_ID}:{run_dir / 'tb'}"
    return [p for p in psutil.process_iter(["cmdline"]) if spec in (p.info["cmdline"] or [])]


def _gone(run_dir: Path, log: str) -> None:
    deadline = time.monotonic() + 15
    while _servers(run_dir):
        assert time.monotonic() < deadline, "TensorBoard still runs on the host"
        time.sleep(0.2)
    assert not Path(log).exists(), "its log is removed on the host"


def _check_served(base: str, run_dir: Path) -> str:
    """The scalars are the run's; TensorBoard is the host's python after its env_setup,
    detached from the SSH session; the path of its log there."""
    scalars = tensorboard_scalars(base, RUN_ID)
    assert scalars["train/loss"] == list(enumerate(LOSSES))
    assert scalars["val/iou/road"] == [(2, 0.625)]
    (server,) = _servers(run_dir)
    assert server.environ().get("SEGLAB_TENSORBOARD_TEST") == "1"
    assert "--host" in server.cmdline() and "127.0.0.1" in server.cmdline()
    return os.readlink(f"/proc/{server.pid}/fd/1")


def test_tensorboard_on_a_slurm_login_node_over_ssh(lab1: Lab, tmp_path: Path) -> None:
    runs_root = tmp_path / "login-runs"
    run_dir = _slurm_run_with_scalars(runs_root)
    login_node(lab1.hosts_yaml, runs_root, sys.executable, [ENV_SETUP])
    banner = "tensorboard on cluster: http://127.0.0.1:"
    with serving(["tensorboard", RUN_ID], banner) as (seglab, url):
        log = _check_served(url, run_dir)
        assert Path(log).name.startswith("seglab-tensorboard.")
        assert seglab.children(recursive=True) == [], (
            "TensorBoard runs on the host, not as a child of seglab"
        )
    _gone(run_dir, log)


def test_the_facade_opens_and_closes_it_as_the_dashboards_t_key_does(
    lab1: Lab, tmp_path: Path
) -> None:
    runs_root = tmp_path / "login-runs"
    run_dir = _slurm_run_with_scalars(runs_root)
    login_node(lab1.hosts_yaml, runs_root, sys.executable, [ENV_SETUP])
    ws = Workstation()
    try:
        forward = ws.tensorboard(RUN_ID)
        try:
            assert forward.alive()
            log = _check_served(forward.url, run_dir)
        finally:
            forward.close()
        _gone(run_dir, log)
        assert not forward.alive()
    finally:
        ws.close()


def test_a_login_node_without_tensorboard_says_what_to_install(lab1: Lab, tmp_path: Path) -> None:
    bare = tmp_path / "bare-venv"
    venv.create(bare, with_pip=False)  # a real interpreter with nothing installed
    python = bare / "bin" / "python"
    runs_root = tmp_path / "login-runs"
    _slurm_run_with_scalars(runs_root)
    login_node(lab1.hosts_yaml, runs_root, python)
    error = failing(["tensorboard", RUN_ID])
    assert f"tensorboard is not installed for {python} on cluster" in error
    assert "No module named 'tensorboard'" in error
    assert "pip install 'seglab[train]'" in error
