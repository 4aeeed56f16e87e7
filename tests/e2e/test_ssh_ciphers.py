"""The cipher seglab's SSH connections negotiate with a real sshd: AES-GCM where both sides
have it, the server's own choice where it lacks AES-GCM, and the user's ``Ciphers``."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from seglab.hosts import load_inventory
from seglab.remote.connection import AES_GCM, ConnectOptions, cpu_has_aes, open_connection
from tests.e2e.sshd import SshHome, SshServer, write_hosts_yaml

pytestmark = [
    pytest.mark.sshd,
    pytest.mark.timeout(60),
    pytest.mark.skipif(not cpu_has_aes(), reason="this CPU has no AES instructions"),
]

KEX = re.compile(r"kex: client->server cipher: (\S+) MAC: \S+ compression: (\S+)")


class CipherServer(SshServer):
    """An sshd that logs the negotiated cipher and offers only ``ciphers`` when given."""

    ciphers: str | None = None

    def write_config(self) -> None:
        """The usual config at LogLevel DEBUG1 (it logs the key exchange's choices)."""
        super().write_config()
        text = self.config.read_text().replace("LogLevel VERBOSE", "LogLevel DEBUG1")
        if self.ciphers:
            text += f"Ciphers {self.ciphers}\n"
        self.config.write_text(text)

    def negotiated(self) -> list[tuple[str, str]]:
        """The client-to-server cipher and compression of every connection so far."""
        return KEX.findall(self.log.read_text())


@pytest.fixture
def server(ssh_home: SshHome, tmp_path: Path, isolated_xdg: Path) -> Iterator[CipherServer]:
    """`lab1` in hosts.yaml and ~/.ssh/config, its key trusted (started by the test)."""
    sshd = CipherServer(tmp_path / "sshd", ssh_home.user_key.with_suffix(".pub"))
    ssh_home.add_host("lab1", sshd)
    ssh_home.trust(sshd)
    write_hosts_yaml(isolated_xdg / "config", {"lab1": {"ssh": "lab1"}})
    try:
        yield sshd
    finally:
        sshd.close()


def _connect_once() -> None:
    target = load_inventory().get("lab1").ssh
    assert target is not None

    async def once() -> None:
        conn, _ = await open_connection("lab1", target, ConnectOptions())
        try:
            assert (await conn.run("true", check=True)).exit_status == 0
        finally:
            conn.close()
            await conn.wait_closed()

    asyncio.run(once())


def test_aes_gcm_is_chosen_where_the_server_has_it(server: CipherServer) -> None:
    server.start()  # OpenSSH's default list: chacha20-poly1305 first, AES-GCM offered too
    _connect_once()
    assert server.negotiated() == [(AES_GCM[0], "none")]  # and no compression


def test_a_server_without_aes_gcm_gets_its_own_cipher(server: CipherServer) -> None:
    server.ciphers = "chacha20-poly1305@openssh.com,aes256-ctr"
    server.start()
    _connect_once()
    assert server.negotiated() == [("chacha20-poly1305@openssh.com", "none")]


def test_the_users_ciphers_setting_wins(server: CipherServer, ssh_home: SshHome) -> None:
    with ssh_home.config.open("a") as out:
        out.write("Host *\n  Ciphers aes256-ctr,chacha20-poly1305@openssh.com\n")
    server.start()
    _connect_once()
    assert server.negotiated() == [("aes256-ctr", "none")]
