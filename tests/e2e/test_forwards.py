"""`seglab tensorboard` and `seglab notebook` on the "remote" host over real SSH.

TensorBoard runs from the CI image on the second engine with host networking, bound to the
server's loopback, and is reached through the SSH port forward the command prints.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.e2e.runlib import DEV_MOUNTS, RECIPES, REPO, final, ps, seglab, wait_for
from tests.e2e.sshd import SecondEngine

pytestmark = [pytest.mark.sshd, pytest.mark.docker, pytest.mark.slow]


def _lines(stream: object, out: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.put(line)


def _page(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode()) if response.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _serve_and_stop(args: list[str], engine: Any, host: str, run_id: str) -> int:
    """Start `seglab ARGS`, fetch TensorBoard at the URL it prints, SIGTERM it, and check
    that the container on ``engine`` and the local port are gone; the URL's port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "seglab", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        try:
            first = lines.get(timeout=240)
        except queue.Empty:
            proc.kill()
            pytest.fail(f"no URL printed; stderr: {proc.communicate()[1]}")
        assert first.startswith(f"tensorboard on {host}: http://127.0.0.1:"), first
        url = first.split(": ", 1)[1].strip()
        port = int(url.rsplit(":", 1)[1].strip("/"))
        html = wait_for(lambda: _page(url), 60, f"TensorBoard's page at {url}")
        assert "<tf-tensorboard" in html or "TensorBoard" in html
        (container,) = engine.containers.list(filters={"label": "seglab.forward=tensorboard"})
        assert container.name.startswith("seglab-tb-")
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert "seglab.run_id" not in container.labels
        assert [r["run_id"] for r in ps()] == [run_id]  # `ps` ignores the forward

        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert (
            engine.containers.list(all=True, filters={"label": "seglab.forward=tensorboard"}) == []
        ), err
        assert not _port_open(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return port


def _finished_tiny_run(on: str) -> str:
    (run_id,) = seglab("run", str(RECIPES / "tiny.yaml"), "--on", on).stdout.split()
    row = wait_for(lambda: final(run_id), 300, "the tiny run to end")
    assert row["status"] == "finished", row
    assert any((Path(row["run_dir"]) / "tb").iterdir())  # the trainer's event files
    return run_id


def test_tensorboard_of_a_remote_run(remote_lab: Path, remote_engine: SecondEngine) -> None:
    run_id = _finished_tiny_run("lab1:cpu")
    remote = docker.DockerClient(base_url=f"unix://{remote_engine.socket}")
    try:
        _serve_and_stop(["tensorboard", run_id], remote, "lab1", run_id)
    finally:
        remote.close()
        seglab("rm", run_id, check=False)


def test_tensorboard_of_a_recipe_on_this_machine(
    isolated_xdg: Path, ci_image: str, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGLAB_DEV_MOUNTS", DEV_MOUNTS)
    run_id = _finished_tiny_run("local:cpu")
    with socket.socket() as probe:  # a free local port for --port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        assert (
            _serve_and_stop(
                ["tensorboard", "tiny", "--port", str(port)], docker_client, "local", run_id
            )
            == port
        )
    finally:
        seglab("rm", run_id, check=False)


def test_notebook_refuses_images_without_jupyter(
    remote_lab: Path, remote_ci_image: str, remote_engine: SecondEngine
) -> None:
    out = seglab("notebook", "lab1:cpu", "--image", remote_ci_image, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"image {remote_ci_image} on lab1 has no `jupyter` command" in out.stderr
    missing = seglab("notebook", "lab1", "--image", "seglab/nothing-here:1", check=False)
    assert missing.returncode == 1
    assert "image seglab/nothing-here:1 is not on host lab1" in missing.stderr
    by_index = seglab("notebook", "lab1:0", check=False)
    assert by_index.returncode == 1 and "give the GPU by UUID" in by_index.stderr
    remote = docker.DockerClient(base_url=f"unix://{remote_engine.socket}")
    try:
        assert remote.containers.list(all=True, filters={"label": "seglab.forward"}) == []
    finally:
        remote.close()
    assert json.loads(seglab("ps", "--all", "--json").stdout) == []
