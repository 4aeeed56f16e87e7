"""`seglab image build --host lab1`: the build runs on a remote engine reached over SSH.

A real sshd and a second real dockerd play the remote server (tests/e2e/sshd.py); the
workstation reaches that engine only through the SSH forward of its socket.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from seglab import __version__
from tests.e2e.sshd import Lab, SecondEngine, write_hosts_yaml

pytestmark = [pytest.mark.sshd, pytest.mark.docker, pytest.mark.timeout(180)]


def test_image_build_on_a_remote_host_goes_through_the_ssh_forward(
    docker_client: Any,
    remote_engine: SecondEngine,
    lab1: Lab,
    isolated_xdg: Path,
    tmp_path: Path,
) -> None:
    import docker
    from docker.errors import ImageNotFound

    write_hosts_yaml(
        isolated_xdg / "config",
        {
            "lab1": {
                "ssh": "lab1",
                "docker_socket": str(remote_engine.socket),
                "nvidia_smi": str(lab1.nvidia_smi),
            }
        },
    )
    # A source tree whose base image needs nothing from a registry.
    source = tmp_path / "src"
    (source / "images" / "base").mkdir(parents=True)
    (source / "pyproject.toml").write_text("[project]\nname = 'probe'\n")
    (source / "images" / "base" / "Dockerfile").write_text(
        "FROM scratch\nCOPY pyproject.toml /probe.toml\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "seglab",
            "image",
            "build",
            "base",
            "--host",
            "lab1",
            "--source",
            str(source),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr
    assert "Step 2/3 : COPY pyproject.toml /probe.toml" in done.stdout
    assert done.stdout.rstrip().endswith("built seglab/base:latest on lab1")
    remote = docker.DockerClient(base_url=f"unix://{remote_engine.socket}", timeout=30)
    try:
        image = remote.images.get("seglab/base:latest")
        assert image.labels["seglab.version"] == __version__
        remote.images.remove(image.id, force=True)
    finally:
        remote.close()
    with pytest.raises(ImageNotFound):  # built there, not on this machine's engine
        docker_client.images.get(image.id)
