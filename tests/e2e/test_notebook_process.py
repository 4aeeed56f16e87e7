"""`seglab notebook` on a host whose runs are processes (a Slurm login node over real SSH):
the host's own Python runs JupyterLab on its loopback, forwarded here; Ctrl-C (SIGTERM)
stops it there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.e2e.sshd import Lab

pytestmark = pytest.mark.sshd


def _fetch(url: str, token: str | None = None) -> str:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"token {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def _servers(root: Path) -> list[psutil.Process]:
    """JupyterLab processes serving ``root`` (the "remote" host is this machine)."""
    flag = f"--ServerApp.root_dir={root}"
    return [p for p in psutil.process_iter(["cmdline"]) if flag in (p.info["cmdline"] or [])]


def test_notebook_on_a_slurm_login_node_over_ssh(lab1: Lab, tmp_path: Path) -> None:
    pytest.importorskip("jupyterlab", reason="the notebook extra is absent")
    runs_root = tmp_path / "login-runs"
    runs_root.mkdir()
    (runs_root / "marker.txt").write_text("here\n")
    lab1.hosts_yaml.write_text(
        textwrap.dedent(f"""
        hosts:
          cluster:
            kind: slurm
            ssh: lab1
            runs_root: {runs_root}
            python: {sys.executable}
            env_setup: [export SEGLAB_NOTEBOOK_TEST=1]
    """)
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "seglab", "notebook", "cluster:cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("notebook on cluster: http://127.0.0.1:"), banner + (
            process.stderr.read() if process.stderr else ""
        )
        url = urllib.parse.urlsplit(banner.split()[-1])
        token = urllib.parse.parse_qs(url.query)["token"][0]
        base = f"http://{url.netloc}"
        assert "started" in json.loads(_fetch(f"{base}/api/status", token))
        contents = json.loads(_fetch(f"{base}/api/contents", token))
        assert "marker.txt" in [item["name"] for item in contents["content"]]
        with pytest.raises(urllib.error.HTTPError) as refused:
            _fetch(f"{base}/api/contents")
        assert refused.value.code == 403
        (server,) = _servers(runs_root)
        assert token not in " ".join(server.cmdline()), "the token is not on a command line"
        assert server.environ().get("CUDA_VISIBLE_DEVICES") == ""
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 0
    deadline = time.monotonic() + 15
    while _servers(runs_root):
        assert time.monotonic() < deadline, "JupyterLab still runs on the host"
        time.sleep(0.2)


def test_notebook_on_a_login_node_without_jupyterlab_says_what_to_install(
    lab1: Lab, tmp_path: Path
) -> None:
    lab1.hosts_yaml.write_text(
        "hosts:\n"
        "  cluster:\n"
        "    kind: slurm\n"
        "    ssh: lab1\n"
        f"    runs_root: {tmp_path / 'runs'}\n"
        f"    python: {tmp_path / 'no-python'}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "seglab", "notebook", "cluster"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1, out
    assert f"JupyterLab is not installed for {tmp_path / 'no-python'} on cluster" in out.stderr
    assert "pip install 'seglab[notebook]'" in out.stderr
