"""The remote Docker socket forwarded over SSH: a second real dockerd reached only through sshd."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from seglab.hosts import load_inventory
from seglab.remote.connection import ConnectOptions, LinkState
from seglab.remote.manager import RemoteHosts
from tests.e2e.sshd import Lab, SecondEngine, write_hosts_yaml

pytestmark = [pytest.mark.sshd, pytest.mark.docker, pytest.mark.timeout(180)]

FAST = ConnectOptions(backoff_initial=0.25, backoff_max=1.0)
LABEL = "seglab.test.forward"


def _client(socket: Path) -> Any:
    import docker

    return docker.DockerClient(base_url=f"unix://{socket}", timeout=20)


def _tiny_image(engine: SecondEngine) -> str:
    """Import a one-file image into the second engine (no registry needed)."""
    data = b"seglab forward test\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    client = _client(engine.socket)
    try:
        client.api.import_image_from_data(
            buffer.getvalue(), repository="seglab-forward-test", tag="latest"
        )
    finally:
        client.close()
    return "seglab-forward-test:latest"


def test_forwarded_engine_answers_through_a_private_socket(
    docker_client: Any, remote_engine: SecondEngine, lab1: Lab, isolated_xdg: Path
) -> None:
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
    image = _tiny_image(remote_engine)
    direct = _client(remote_engine.socket)
    created = direct.containers.create(image, command=["/hello.txt"], labels={LABEL: "1"})

    async def scenario() -> None:
        remotes = RemoteHosts(load_inventory(), FAST)
        await remotes.start()
        try:
            conn = remotes.connection("lab1")
            await conn.wait_for(LinkState.ONLINE, timeout=15)
            local = remotes.docker_socket("lab1")
            assert local.is_socket()
            assert stat.S_IMODE(local.stat().st_mode) == 0o600
            assert stat.S_IMODE(local.parent.stat().st_mode) == 0o700
            assert local.parent.stat().st_uid == os.getuid()

            def through_forward() -> tuple[str, list[str]]:
                client = _client(local)
                try:
                    assert client.ping()
                    root = client.info()["DockerRootDir"]
                    ids = [c.id for c in client.containers.list(all=True, filters={"label": LABEL})]
                    return root, ids
                finally:
                    client.close()

            root, ids = await asyncio.to_thread(through_forward)
            assert root == str(remote_engine.data_root)
            assert ids == [created.id]
            local_ids = [
                c.id for c in docker_client.containers.list(all=True, filters={"label": LABEL})
            ]
            assert created.id not in local_ids
            assert docker_client.info()["DockerRootDir"] != root

            report = await remotes.report("lab1")
            assert report.state == "online"
            assert report.docker_version == direct.version()["Version"]
            assert report.nvidia_runtime is False
            assert (report.driver_version, report.gpu_count) == ("590.48.01", 2)
            assert report.cuda_version == "13.1"
            assert report.latency_ms is not None and report.latency_ms > 0
            assert report.problems == []

            # Link loss: the forward comes back at the same path and works again.
            assert await asyncio.to_thread(lab1.server.kill_sessions) >= 1
            for _ in range(200):
                if conn.counters.connects >= 2 and conn.is_online:
                    break
                await asyncio.sleep(0.05)
            assert conn.counters.connects == 2 and conn.is_online
            assert remotes.docker_socket("lab1") == local
            assert stat.S_IMODE(local.stat().st_mode) == 0o600
            root_again, _ = await asyncio.to_thread(through_forward)
            assert root_again == root
        finally:
            await remotes.stop()
        assert not local.exists()

    try:
        asyncio.run(scenario())
    finally:
        created.remove(force=True)
        direct.close()
