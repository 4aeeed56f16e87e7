"""`seglab hosts trust NAME` against a real sshd, and what seglab leaves on disk."""

from __future__ import annotations

import asyncio
import io
import subprocess
from pathlib import Path

import pytest

from seglab.cli import main
from seglab.hosts import load_inventory
from seglab.remote.connection import LinkState
from seglab.remote.manager import RemoteHosts
from tests.e2e.sshd import SSH_KEYGEN, SshHome, SshServer, write_hosts_yaml

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(60)]


def _hosts_yaml(isolated_xdg: Path) -> None:
    write_hosts_yaml(isolated_xdg / "config", {"lab1": {"ssh": "lab1"}})


def test_trust_asks_and_a_no_writes_nothing(
    sshd: SshServer,
    ssh_home: SshHome,
    isolated_xdg: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _hosts_yaml(isolated_xdg)
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert main(["hosts", "trust", "lab1"]) == 1
    out = capsys.readouterr()
    assert sshd.host_fingerprint in out.out
    assert "Not trusted" in out.err
    assert ssh_home.known_hosts.read_text() == ""


def test_trust_yes_then_connects_and_a_changed_key_is_not_overwritten(
    sshd: SshServer,
    ssh_home: SshHome,
    isolated_xdg: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _hosts_yaml(isolated_xdg)
    assert main(["hosts", "trust", "lab1", "--yes"]) == 0
    assert sshd.host_fingerprint in capsys.readouterr().out
    public = sshd.host_key.with_suffix(".pub").read_text().split()
    assert ssh_home.known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {public[0]} {public[1]}\n"

    assert main(["hosts", "trust", "lab1", "--yes"]) == 0
    assert "already trusted" in capsys.readouterr().out
    assert len(ssh_home.known_hosts.read_text().splitlines()) == 1

    async def online() -> str:
        remotes = RemoteHosts(load_inventory())
        await remotes.start()
        try:
            return (
                await remotes.connection("lab1").wait_for(
                    LinkState.ONLINE, LinkState.HOST_KEY_REFUSED, timeout=15
                )
            ).state.value
        finally:
            await remotes.stop()

    assert asyncio.run(online()) == "online"

    sshd.restart(new_host_key=True)
    before = ssh_home.known_hosts.read_text()
    assert main(["hosts", "trust", "lab1", "--yes"]) == 1
    err = capsys.readouterr().err
    assert "DIFFERENT key" in err and f"ssh-keygen -R '[127.0.0.1]:{sshd.port}'" in err
    assert ssh_home.known_hosts.read_text() == before
    assert asyncio.run(online()) == "host-key-refused"


def test_unknown_and_local_hosts_are_clear_errors(
    sshd: SshServer,
    ssh_home: SshHome,
    isolated_xdg: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _hosts_yaml(isolated_xdg)
    assert main(["hosts", "trust", "lab2", "--yes"]) == 1
    assert "unknown host 'lab2'" in capsys.readouterr().err
    assert main(["hosts", "trust", "local", "--yes"]) == 1
    assert "is this machine" in capsys.readouterr().err
    sshd.stop_listening()
    assert main(["hosts", "trust", "lab1", "--yes"]) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_no_file_seglab_writes_holds_key_material(
    sshd: SshServer,
    ssh_home: SshHome,
    isolated_xdg: Path,
) -> None:
    """After trusting, connecting and forwarding, no file outside the user's own key files
    holds a private key (its PEM armour or its base64 body) and no password is asked for."""
    _hosts_yaml(isolated_xdg)
    assert main(["hosts", "trust", "lab1", "--yes"]) == 0

    async def connect_and_forward() -> Path:
        remotes = RemoteHosts(load_inventory())
        await remotes.start()
        try:
            await remotes.connection("lab1").wait_for(LinkState.ONLINE, timeout=15)
            return remotes.docker_socket("lab1").parent
        finally:
            await remotes.stop()

    forward_dir = asyncio.run(connect_and_forward())
    private = ssh_home.user_key.read_text().splitlines()
    body = "".join(line for line in private if "PRIVATE KEY" not in line)
    own_keys = {ssh_home.user_key, ssh_home.user_key.with_suffix(".pub")}
    scanned = 0
    for root in (isolated_xdg, forward_dir):
        for path in root.rglob("*"):
            if not path.is_file() or path in own_keys:
                continue
            text = path.read_bytes().decode("utf-8", "replace")
            flat = "".join(text.split())
            assert "PRIVATE KEY" not in text, path
            assert body[:60] not in flat, path
            scanned += 1
    assert scanned >= 2  # at least hosts.yaml and known_hosts were looked at


def test_hashed_known_hosts_entries_are_honoured(
    sshd: SshServer,
    ssh_home: SshHome,
    isolated_xdg: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Debian's ssh_config hashes known_hosts (HashKnownHosts yes); seglab reads such files."""
    _hosts_yaml(isolated_xdg)
    ssh_home.trust(sshd)
    subprocess.run([SSH_KEYGEN, "-q", "-H", "-f", str(ssh_home.known_hosts)], check=True)
    hashed = ssh_home.known_hosts.read_text()
    assert hashed.startswith("|1|") and "127.0.0.1" not in hashed
    assert main(["hosts", "trust", "lab1", "--yes"]) == 0
    assert "already trusted" in capsys.readouterr().out

    async def online() -> str:
        remotes = RemoteHosts(load_inventory())
        await remotes.start()
        try:
            return (
                await remotes.connection("lab1").wait_for(
                    LinkState.ONLINE, LinkState.HOST_KEY_REFUSED, timeout=15
                )
            ).state.value
        finally:
            await remotes.stop()

    assert asyncio.run(online()) == "online"
