"""A TCP service on the server's loopback (Jupyter, TensorBoard) forwarded to 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from seglab.hosts import load_inventory
from seglab.remote.connection import ConnectOptions, LinkState
from seglab.remote.manager import RemoteHosts
from tests.e2e.sshd import Lab, free_port

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(60)]


def _get(port: int) -> str:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    with direct.open(f"http://127.0.0.1:{port}/hello.txt", timeout=5) as reply:
        return str(reply.read().decode())


def _serve(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server, port
        except OSError:
            time.sleep(0.05)
    server.kill()
    pytest.fail("the test HTTP server did not start")


def test_port_forward_survives_reconnect_and_closes(lab1: Lab, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("notebook says hi")
    http, remote_port = _serve(tmp_path)

    async def scenario() -> None:
        remotes = RemoteHosts(load_inventory(), ConnectOptions(backoff_initial=0.1))
        await remotes.start()
        try:
            conn = remotes.connection("lab1")
            await conn.wait_for(LinkState.ONLINE, timeout=15)
            forward = await remotes.machine("lab1").forward_port(remote_port)
            local = forward.local_port
            assert local not in (0, remote_port)
            assert await asyncio.to_thread(_get, local) == "notebook says hi"

            assert await asyncio.to_thread(lab1.server.kill_sessions) >= 1
            for _ in range(200):
                if conn.counters.connects >= 2 and conn.is_online:
                    break
                await asyncio.sleep(0.05)
            assert conn.counters.connects == 2
            assert forward.local_port == local and forward.established == 2
            assert await asyncio.to_thread(_get, local) == "notebook says hi"

            await forward.stop()
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", local), timeout=2).close()
        finally:
            await remotes.stop()

    try:
        asyncio.run(scenario())
    finally:
        http.kill()
        http.wait()
