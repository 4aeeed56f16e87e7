"""One SSH stack per process: the dashboard's live telemetry of two remote hosts and a run
launched on one of them, all through one workstation, make exactly one SSH connection per
host, counted on the servers (sshd's own log and its per-connection processes); stopping one
forward leaves the others, and a second stack's sockets, working."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import psutil
import pytest

from seglab.tui.feeds import LiveFeed
from seglab.workstation import Workstation
from tests.e2e.runlib import RECIPES, wait_for
from tests.e2e.sshd import Lab, SecondEngine, SshHome, SshServer, write_hosts_yaml

pytestmark = [pytest.mark.sshd, pytest.mark.docker, pytest.mark.slow]


def connections_accepted(server: SshServer) -> int:
    """Connections sshd authenticated over its whole life (its VERBOSE log)."""
    return server.log.read_text(errors="replace").count("Accepted publickey")


def connections_open(server: SshServer) -> int:
    """Per-connection sshd processes now (direct children of the listener)."""
    assert server.process is not None
    return len(psutil.Process(server.process.pid).children(recursive=False))


@pytest.fixture
def lab2(ssh_home: SshHome, tmp_path: Path) -> Iterator[SshServer]:
    """A second sshd, the ~/.ssh/config alias `lab2`, its host key trusted."""
    server = SshServer(tmp_path / "sshd2", ssh_home.user_key.with_suffix(".pub"))
    server.start()
    ssh_home.add_host("lab2", server)
    ssh_home.trust(server)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def page_server() -> Iterator[int]:
    """An HTTP server on this machine's loopback (the "remote" hosts' loopback too)."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"forwarded page"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def engine_version(url: str) -> str:
    """The Docker engine's version through ``url`` (a forwarded socket)."""
    client = docker.DockerClient(base_url=url)
    try:
        return str(client.version()["Version"])
    finally:
        client.close()


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return str(response.read().decode())


def test_dashboard_and_a_launch_share_one_connection_per_host(
    remote_lab: Path,
    lab1: Lab,
    lab2: SshServer,
    remote_engine: SecondEngine,
    isolated_xdg: Path,
    page_server: int,
) -> None:
    write_hosts_yaml(
        isolated_xdg / "config",
        {
            "lab1": {
                "ssh": "lab1",
                "nvidia_smi": str(lab1.nvidia_smi),
                "runs_root": str(remote_lab),
                "docker_socket": str(remote_engine.socket),
            },
            "lab2": {"ssh": "lab2", "nvidia_smi": str(lab1.nvidia_smi)},
        },
    )
    ws = Workstation()
    feed = LiveFeed(ws)  # what the dashboard shows, from the façade
    run_ids: list[str] = []
    try:
        asyncio.run(feed.start())
        wait_for(
            lambda: {s.host for s in feed.states() if s.gpus} >= {"lab1", "lab2"},
            60,
            "live telemetry of both remote hosts",
        )
        assert {name for name, (state, _) in feed.links().items() if state == "online"} == {
            "lab1",
            "lab2",
        }
        # Placement and queue pumping reuse what the live feed already has.
        reused = ws.current_states(["lab1", "lab2"])
        assert reused is not None and len(reused["lab1"].gpus) == 2

        submitted = ws.launch(RECIPES / "tiny-grid.yaml", ["lr=low"], on="lab1:cpu")
        run_ids = [s.record.run_id for s in submitted]
        engine = docker.DockerClient(base_url=f"unix://{remote_engine.socket}")
        try:
            container = engine.containers.get(f"seglab-{run_ids[0]}")
            assert container.labels["seglab.host"] == "lab1"
        finally:
            engine.close()
        time.sleep(3)  # telemetry keeps polling while the run goes on

        assert connections_accepted(lab1.server) == 1, lab1.server.log.read_text()[-3000:]
        assert connections_accepted(lab2) == 1, lab2.log.read_text()[-3000:]
        assert connections_open(lab1.server) == 1
        assert connections_open(lab2) == 1

        # Two forwards on lab1: stopping one leaves the other and the engine socket up.
        machine = ws.machine("lab1")
        first = machine.forward_port(page_server)
        second = machine.forward_port(page_server)
        assert _get(first.local_port) == _get(second.local_port) == "forwarded page"
        machine.stop_forward(first)
        assert _get(second.local_port) == "forwarded page"
        docker_url = machine.docker_url()
        assert engine_version(docker_url)

        # A second stack in this process (another workstation) closing its forwards
        # never removes this one's engine socket.
        other = Workstation()
        other_url = other.machine("lab1").docker_url()
        assert other_url != docker_url
        assert connections_accepted(lab1.server) == 2  # the count sees a second stack
        other.close()
        assert Path(docker_url.removeprefix("unix://")).is_socket()
        assert engine_version(docker_url)
        assert _get(second.local_port) == "forwarded page"
        assert connections_accepted(lab2) == 1
    finally:
        asyncio.run(feed.close())
        if run_ids:
            engine = docker.DockerClient(base_url=f"unix://{remote_engine.socket}")
            try:
                for run_id in run_ids:
                    engine.containers.get(f"seglab-{run_id}").remove(force=True)
            finally:
                engine.close()
        ws.close()
