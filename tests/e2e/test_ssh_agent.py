"""Authentication through a real ssh-agent, with no key file left in ~/.ssh."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seglab.hosts import load_inventory
from seglab.remote.connection import LinkState
from seglab.remote.manager import RemoteHosts
from tests.e2e.sshd import Lab

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(60)]


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private ssh-agent on a socket of its own (stopped afterwards)."""
    binary = shutil.which("ssh-agent")
    if binary is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent/ssh-add are not installed (openssh-client)")
    sock = tmp_path / "agent.sock"
    process = subprocess.Popen([binary, "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists() or process.poll() is not None:
                break
            time.sleep(0.05)
        if not sock.exists():
            pytest.fail(f"ssh-agent did not create {sock} (exit status {process.poll()})")
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield sock
    finally:
        process.terminate()
        process.wait(10)


def test_the_agent_alone_authenticates(lab1: Lab, agent: Path) -> None:
    key = lab1.home.user_key
    subprocess.run(
        ["ssh-add", "-q", str(key)],
        check=True,
        capture_output=True,
        env={"SSH_AUTH_SOCK": str(agent), "PATH": "/usr/bin:/bin"},
    )
    # The key exists only in the agent now: no file in ~/.ssh, none named in the config.
    key.unlink()
    key.with_suffix(".pub").unlink()
    lab1.home.config.write_text(lab1.home.config.read_text().replace(f"  IdentityFile {key}\n", ""))

    async def scenario() -> tuple[str, str]:
        remotes = RemoteHosts(load_inventory())
        await remotes.start()
        try:
            status = await remotes.connection("lab1").wait_for(
                LinkState.ONLINE, LinkState.AUTH_FAILED, timeout=15
            )
            if status.state is not LinkState.ONLINE:
                return status.state.value, status.message or ""
            result = await remotes.machine("lab1").run(["echo", "via-agent"], timeout=10)
            return status.state.value, result.stdout.strip()
        finally:
            await remotes.stop()

    assert asyncio.run(scenario()) == ("online", "via-agent")
    assert "Accepted publickey" in lab1.server.log.read_text()


def test_without_agent_or_key_files_it_is_auth_failed(lab1: Lab) -> None:
    lab1.home.user_key.unlink()

    async def scenario() -> tuple[str, str]:
        remotes = RemoteHosts(load_inventory())
        await remotes.start()
        try:
            status = await remotes.connection("lab1").wait_for(
                LinkState.ONLINE, LinkState.AUTH_FAILED, timeout=15
            )
            return status.state.value, status.message or ""
        finally:
            await remotes.stop()

    state, message = asyncio.run(scenario())
    assert state == "auth-failed"
    assert "never uses passwords" in message
