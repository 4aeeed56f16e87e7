"""`seglab tensorboard RUN` and `seglab notebook` without Docker: this Python's TensorBoard
and JupyterLab as local processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from seglab import paths
from seglab.registry import Registry, RunRecord, RunStatus

RUN_ID = "seed.default.cd34"


def _run_with_scalars(run_dir: Path) -> None:
    """A finished process-runtime run whose tb/ holds a loss curve (as the trainer writes)."""
    summary = pytest.importorskip("torch.utils.tensorboard", reason="the train extra is absent")
    writer = summary.SummaryWriter(str(run_dir / "tb"))
    for step, loss in enumerate((1.0, 0.75, 0.5)):
        writer.add_scalar("train/loss", loss, step)
    writer.close()
    with Registry() as registry:
        registry.upsert_run(
            RunRecord(
                run_id=RUN_ID,
                recipe="seed",
                variant="default",
                host="local",
                runtime="process",
                run_dir=str(run_dir),
                status=RunStatus.FINISHED,
            )
        )


def _fetch(url: str, token: str | None = None) -> str:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"token {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def test_tensorboard_serves_a_process_runs_scalars(tmp_path: Path) -> None:
    children: list[psutil.Process] = []
    _run_with_scalars(tmp_path / "run")
    process = subprocess.Popen(
        [sys.executable, "-m", "seglab", "tensorboard", RUN_ID],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("tensorboard on local: http://127.0.0.1:"), banner + (
            process.stderr.read() if process.stderr else ""
        )
        url = banner.split()[-1]
        deadline = time.monotonic() + 60
        while True:  # TensorBoard loads the event files in the background
            tags = json.loads(_fetch(url + "data/plugin/scalars/tags"))
            if tags:
                break
            assert time.monotonic() < deadline, tags
            time.sleep(0.5)
        (run,) = tags  # TensorBoard names it "<run id>/."
        assert run.split("/")[0] == RUN_ID and "train/loss" in tags[run]
        query = urllib.parse.urlencode({"run": run, "tag": "train/loss"})
        scalars = json.loads(_fetch(url + "data/plugin/scalars/scalars?" + query))
        children = psutil.Process(process.pid).children(recursive=True)
        assert children, "TensorBoard runs as a child process"
        assert [(step, value) for _, step, value in scalars] == [(0, 1.0), (1, 0.75), (2, 0.5)]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], "stopping `seglab tensorboard` stops TensorBoard"


def test_notebook_without_docker_is_a_local_jupyterlab(tmp_path: Path) -> None:
    pytest.importorskip("jupyterlab", reason="the notebook extra is absent")
    root = paths.default_runs_root()
    root.mkdir(parents=True, exist_ok=True)
    (root / "marker.txt").write_text("here\n")
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'no-engine.sock'}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "seglab", "notebook", "local"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    children: list[psutil.Process] = []
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("notebook on local: http://127.0.0.1:"), banner + (
            process.stderr.read() if process.stderr else ""
        )
        url = urllib.parse.urlsplit(banner.split()[-1])
        assert url.path == "/lab"
        token = urllib.parse.parse_qs(url.query)["token"][0]
        base = f"http://{url.netloc}"
        status = json.loads(_fetch(f"{base}/api/status", token))
        assert "started" in status
        contents = json.loads(_fetch(f"{base}/api/contents", token))
        assert "marker.txt" in [item["name"] for item in contents["content"]]
        with pytest.raises(urllib.error.HTTPError) as refused:
            _fetch(f"{base}/api/contents")  # the token guards it
        assert refused.value.code == 403
        children = psutil.Process(process.pid).children(recursive=True)
        assert any("jupyterlab" in " ".join(child.cmdline()) for child in children)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], "stopping `seglab notebook` stops JupyterLab"
