"""`seglab tensorboard RUN` and `seglab notebook` without Docker: this Python's TensorBoard
and JupyterLab as local processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.parse
import urllib.request
import venv
from pathlib import Path

import psutil
import pytest

from seglab import paths
from tests.conftest import REPO
from tests.serving import (
    failing,
    fetch,
    finished_run_with_scalars,
    serving,
    tensorboard_scalars,
)

RUN_ID = "seed.default.cd34"


@pytest.mark.parametrize(("host", "runtime"), [("local", "process"), ("cluster", "slurm")])
def test_tensorboard_serves_a_process_runs_scalars(
    host: str, runtime: str, isolated_xdg: Path, tmp_path: Path
) -> None:
    """A process run here, or a job of a Slurm cluster whose login node is this machine."""
    hosts_yaml = isolated_xdg / "config" / "seglab" / "hosts.yaml"
    hosts_yaml.parent.mkdir(parents=True, exist_ok=True)
    hosts_yaml.write_text(f"hosts:\n  cluster:\n    kind: slurm\n    runs_root: {tmp_path}\n")
    loss = [(0, 1.0), (1, 0.75), (2, 0.5)]
    finished_run_with_scalars(
        tmp_path / "run", RUN_ID, {"train/loss": loss}, host=host, runtime=runtime
    )
    banner = f"tensorboard on {host}: http://127.0.0.1:"
    with serving(["tensorboard", RUN_ID], banner) as (seglab, url):
        scalars = tensorboard_scalars(url, RUN_ID)
        children = seglab.children(recursive=True)
        assert children, "TensorBoard runs as a child process"
        assert scalars["train/loss"] == loss
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], "stopping `seglab tensorboard` stops TensorBoard"


def test_notebook_without_docker_is_a_local_jupyterlab(tmp_path: Path) -> None:
    pytest.importorskip("jupyterlab", reason="the notebook extra is absent")
    root = paths.default_runs_root()
    root.mkdir(parents=True, exist_ok=True)
    (root / "marker.txt").write_text("here\n")
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'no-engine.sock'}"}
    banner = "notebook on local: http://127.0.0.1:"
    with serving(["notebook", "local"], banner, env) as (seglab, link):
        url = urllib.parse.urlsplit(link)
        assert url.path == "/lab"
        token = urllib.parse.parse_qs(url.query)["token"][0]
        base = f"http://{url.netloc}"
        status = json.loads(fetch(f"{base}/api/status", token))
        assert "started" in status
        contents = json.loads(fetch(f"{base}/api/contents", token))
        assert "marker.txt" in [item["name"] for item in contents["content"]]
        with pytest.raises(urllib.error.HTTPError) as refused:
            fetch(f"{base}/api/contents")  # the token guards it
        assert refused.value.code == 403
        children = seglab.children(recursive=True)
        assert any("jupyterlab" in " ".join(child.cmdline()) for child in children)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], "stopping `seglab notebook` stops JupyterLab"


def _python_without_jupyterlab(where: Path) -> Path:
    """A real venv holding every package of this one but JupyterLab (links to them)."""
    venv.create(where, with_pip=False, symlinks=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = where / "lib" / version / "site-packages"
    for entry in Path(sysconfig.get_path("purelib")).iterdir():
        if entry.name != "jupyterlab" and not entry.name.startswith("jupyterlab-"):
            (site / entry.name).symlink_to(entry)
    return where / "bin" / "python"


def test_notebook_without_docker_or_jupyterlab_says_what_to_install(tmp_path: Path) -> None:
    python = _python_without_jupyterlab(tmp_path / "venv")
    assert subprocess.run([python, "-c", "import seglab.cli"], check=False).returncode == 0
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'no-engine.sock'}"}
    error = failing(["notebook", "local"], python, env, cwd=REPO)
    assert "JupyterLab is not installed in this Python and no Docker engine is used" in error
    assert "pip install 'seglab[notebook]'" in error
