"""`seglab notebook` on a host whose runs are processes (a Slurm login node over real SSH):
the host's own Python runs JupyterLab on its loopback, forwarded here; Ctrl-C (SIGTERM)
stops it there."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
from pathlib import Path

import psutil
import pytest

from tests.e2e.sshd import Lab
from tests.serving import failing, fetch, login_node, serving

pytestmark = pytest.mark.sshd


def _servers(root: Path) -> list[psutil.Process]:
    """JupyterLab processes serving ``root`` (the "remote" host is this machine)."""
    flag = f"--ServerApp.root_dir={root}"
    return [p for p in psutil.process_iter(["cmdline"]) if flag in (p.info["cmdline"] or [])]


def test_notebook_on_a_slurm_login_node_over_ssh(lab1: Lab, tmp_path: Path) -> None:
    pytest.importorskip("jupyterlab", reason="the notebook extra is absent")
    runs_root = tmp_path / "login-runs"
    runs_root.mkdir()
    (runs_root / "marker.txt").write_text("here\n")
    login_node(lab1.hosts_yaml, runs_root, sys.executable, ["export SEGLAB_NOTEBOOK_TEST=1"])
    banner = "notebook on cluster: http://127.0.0.1:"
    with serving(["notebook", "cluster:cpu"], banner) as (_, link):
        url = urllib.parse.urlsplit(link)
        token = urllib.parse.parse_qs(url.query)["token"][0]
        base = f"http://{url.netloc}"
        assert "started" in json.loads(fetch(f"{base}/api/status", token))
        contents = json.loads(fetch(f"{base}/api/contents", token))
        assert "marker.txt" in [item["name"] for item in contents["content"]]
        with pytest.raises(urllib.error.HTTPError) as refused:
            fetch(f"{base}/api/contents")
        assert refused.value.code == 403
        (server,) = _servers(runs_root)
        assert token not in " ".join(server.cmdline()), "the token is not on a command line"
        assert server.environ().get("CUDA_VISIBLE_DEVICES") == ""
        assert server.environ().get("SEGLAB_NOTEBOOK_TEST") == "1", "after env_setup"
    deadline = time.monotonic() + 15
    while _servers(runs_root):
        assert time.monotonic() < deadline, "JupyterLab still runs on the host"
        time.sleep(0.2)


def test_notebook_on_a_login_node_without_jupyterlab_says_what_to_install(
    lab1: Lab, tmp_path: Path
) -> None:
    login_node(lab1.hosts_yaml, tmp_path / "runs", tmp_path / "no-python")
    error = failing(["notebook", "cluster"])
    assert f"JupyterLab is not installed for {tmp_path / 'no-python'} on cluster" in error
    assert "pip install 'seglab[notebook]'" in error
