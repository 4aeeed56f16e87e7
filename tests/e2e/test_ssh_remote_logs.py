"""A run on the remote engine, reached only through the SSH forward: its followed log goes
on across link loss with no line missing and none twice (DockerRuntime's cursor + the
forward coming back at the same path)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from seglab.hosts import load_inventory
from seglab.remote.connection import ConnectOptions, LinkState
from seglab.remote.manager import RemoteHosts
from seglab.runtime.base import LogCursor
from seglab.runtime.docker import DockerRuntime
from seglab.runtime.errors import EngineUnavailable
from seglab.runtime.spec import LaunchSpec
from tests.e2e.sshd import Lab, SecondEngine, write_hosts_yaml

pytestmark = [pytest.mark.sshd, pytest.mark.docker, pytest.mark.timeout(240)]

LINES = 120
PROGRAM = (
    "import time\n"
    f"for i in range({LINES}):\n"
    "    print(f'line {i}', flush=True)\n"
    "    time.sleep(0.05)\n"
)


def _follow(runtime: DockerRuntime, ref: str, out: list[str], events: list[str]) -> None:
    """Follow to the end, resuming from the last cursor whenever the engine goes away."""
    cursor: LogCursor | None = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        events.append("follow")
        try:
            for line in runtime.logs(ref, follow=True, since=cursor):
                out.append(line.text)
                cursor = line.cursor
            if runtime.inspect(ref).status != "running":
                return
        except EngineUnavailable as exc:
            events.append(str(exc))
            runtime.close()
            time.sleep(0.2)
    events.append("gave up after 120 s")


def test_followed_log_survives_link_loss(
    docker_client: Any,
    remote_ci_image: str,
    remote_engine: SecondEngine,
    lab1: Lab,
    isolated_xdg: Path,
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
    spec = LaunchSpec(
        name="remote-logs-test",
        image=remote_ci_image,
        command=("python3", "-c", PROGRAM),
        user="1000:1000",
        labels={"seglab.run_id": "remote-logs-test"},
    )

    async def scenario() -> tuple[list[str], list[str]]:
        remotes = RemoteHosts(
            load_inventory(), ConnectOptions(backoff_initial=0.2, backoff_max=1.0)
        )
        await remotes.start()
        runtime = DockerRuntime(f"unix://{remotes.docker_socket('lab1')}", host="lab1")
        try:
            conn = remotes.connection("lab1")
            await conn.wait_for(LinkState.ONLINE, timeout=15)
            ref = await asyncio.to_thread(runtime.launch, spec)
            lines: list[str] = []
            events: list[str] = []
            follower = threading.Thread(target=_follow, args=(runtime, ref, lines, events))
            follower.start()
            while len(lines) < 20:
                await asyncio.sleep(0.05)
            assert await asyncio.to_thread(lab1.server.kill_sessions) >= 1
            await asyncio.to_thread(follower.join, 150)
            assert not follower.is_alive()
            await asyncio.to_thread(runtime.remove, ref, True)
            return lines, events
        finally:
            runtime.close()
            await remotes.stop()

    lines, events = asyncio.run(scenario())
    assert lines == [f"line {i}" for i in range(LINES)]
    assert "gave up after 120 s" not in events
    assert events.count("follow") >= 2  # the link loss did cut the first follow short
    # The run lives on the second engine only: the local engine never saw it.
    assert not docker_client.containers.list(
        all=True, filters={"label": "seglab.run_id=remote-logs-test"}
    )
