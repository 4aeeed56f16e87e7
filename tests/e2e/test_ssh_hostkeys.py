"""Strict host-key checking against a real sshd: unknown refused, trusted works, changed refused."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from seglab.hosts import load_inventory
from seglab.machines import CommandError
from seglab.remote.connection import (
    ConnectOptions,
    HostConnection,
    LinkState,
    LinkStatus,
)
from seglab.remote.machine import SSHMachine
from seglab.remote.trust import add_to_known_hosts, fetch_server_key
from tests.e2e.sshd import SshHome, SshServer, write_hosts_yaml

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(60)]

FAST = ConnectOptions(backoff_initial=0.1, backoff_max=0.5, refused_retry=0.2)


def _connection(isolated_xdg: Path) -> HostConnection:
    write_hosts_yaml(isolated_xdg / "config", {"lab1": {"ssh": "lab1"}})
    host = load_inventory().get("lab1")
    assert host.ssh is not None
    return HostConnection("lab1", host.ssh, FAST)


async def _status_after_start(conn: HostConnection, *states: LinkState) -> LinkStatus:
    await conn.start()
    try:
        return await conn.wait_for(*states, timeout=15)
    finally:
        await conn.stop()


def test_unknown_key_is_refused_before_authentication(
    sshd: SshServer, ssh_home: SshHome, isolated_xdg: Path
) -> None:
    conn = _connection(isolated_xdg)

    async def scenario() -> None:
        await conn.start()
        try:
            status = await conn.wait_for(LinkState.HOST_KEY_REFUSED, timeout=15)
        finally:
            await conn.stop()
        assert status.fingerprint == sshd.host_fingerprint
        assert sshd.host_fingerprint in (status.message or "")
        assert "seglab hosts trust lab1" in (status.message or "")
        assert "unknown" in (status.message or "")
        assert conn.counters.connects == 0

    asyncio.run(scenario())
    # The server saw a key exchange and nothing after it: no authentication was attempted.
    log = sshd.log.read_text()
    assert "Accepted publickey" not in log
    assert "Failed publickey" not in log
    assert "Postponed publickey" not in log


def test_trust_then_connect_then_changed_key_is_refused(
    sshd: SshServer, ssh_home: SshHome, isolated_xdg: Path
) -> None:
    conn = _connection(isolated_xdg)
    target = conn.target

    async def trust() -> None:
        server_key = await fetch_server_key(target)
        assert server_key.fingerprint == sshd.host_fingerprint
        assert not server_key.trusted and not server_key.conflicts
        add_to_known_hosts(server_key)
        again = await fetch_server_key(target)
        assert again.trusted

    asyncio.run(trust())
    line = ssh_home.known_hosts.read_text().strip()
    public = sshd.host_key.with_suffix(".pub").read_text().split()
    assert line == f"[127.0.0.1]:{sshd.port} {public[0]} {public[1]}"

    async def run_command() -> str:
        await conn.start()
        try:
            await conn.wait_for(LinkState.ONLINE, timeout=15)
            ssh = await conn.connection(timeout=1)
            result = await ssh.run("echo connected-as-$(id -un)", check=True)
            return str(result.stdout).strip()
        finally:
            await conn.stop()

    assert asyncio.run(run_command()) == f"connected-as-{sshd.user}"

    old_fingerprint = sshd.host_fingerprint
    sshd.restart(new_host_key=True)
    assert sshd.host_fingerprint != old_fingerprint
    refused = HostConnection("lab1", target, FAST)

    async def changed() -> None:
        await refused.start()
        try:
            status = await refused.wait_for(LinkState.HOST_KEY_REFUSED, timeout=15)
        finally:
            await refused.stop()
        assert status.fingerprint == sshd.host_fingerprint
        assert "CHANGED" in (status.message or "")
        assert sshd.host_fingerprint in (status.message or "")
        server_key = await fetch_server_key(target)
        assert server_key.conflicts and not server_key.trusted

    asyncio.run(changed())


def test_a_key_the_server_does_not_accept_is_auth_failed(
    sshd: SshServer, ssh_home: SshHome, isolated_xdg: Path
) -> None:
    ssh_home.trust(sshd)
    sshd.authorized_keys.write_text("")
    conn = _connection(isolated_xdg)
    status = asyncio.run(_status_after_start(conn, LinkState.AUTH_FAILED, LinkState.ONLINE))
    assert status.state is LinkState.AUTH_FAILED
    assert "never uses passwords" in (status.message or "")


def test_commands_on_a_refused_host_fail_at_once_with_the_fingerprint(
    sshd: SshServer, ssh_home: SshHome, isolated_xdg: Path
) -> None:
    conn = _connection(isolated_xdg)

    async def scenario() -> tuple[str, float]:
        await conn.start()
        try:
            started = time.monotonic()
            with pytest.raises(CommandError) as caught:
                await SSHMachine(conn, wait_online=30).run(["true"], timeout=5)
            return str(caught.value), time.monotonic() - started
        finally:
            await conn.stop()

    message, waited = asyncio.run(scenario())
    assert "host-key-refused" in message and sshd.host_fingerprint in message
    assert waited < 10  # not the 30 s an offline host would get to come back
