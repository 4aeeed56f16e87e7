"""The private socket directory is checked before every listen; a bad one is reported."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat

import pytest

from seglab.hosts import load_inventory
from seglab.remote.connection import ConnectOptions, LinkState
from seglab.remote.forward import ForwardError, forward_dir
from seglab.remote.manager import RemoteHosts
from tests.e2e.sshd import Lab

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(60)]


def test_a_hijacked_socket_directory_keeps_the_host_offline_until_fixed(
    lab1: Lab,
) -> None:
    async def scenario() -> None:
        remotes = RemoteHosts(
            load_inventory(), ConnectOptions(backoff_initial=0.2, backoff_max=0.5)
        )
        directory = remotes.docker_socket("lab1").parent
        shutil.rmtree(directory)
        directory.write_text("not a directory")  # what an attacker's squatting looks like
        await remotes.start()
        try:
            conn = remotes.connection("lab1")
            status = await conn.wait_for(LinkState.OFFLINE, timeout=15)
            assert "setting up the connection failed" in (status.message or "")
            assert "not a directory owned by you" in (status.message or "")
            assert not conn.is_online

            directory.unlink()
            await conn.wait_for(LinkState.ONLINE, timeout=10)
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
            assert remotes.docker_socket("lab1").is_socket()
        finally:
            await remotes.stop()

    asyncio.run(scenario())


def test_forward_dir_is_private_and_repaired(lab1: Lab) -> None:
    path = forward_dir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o700 and path.stat().st_uid == os.getuid()
    path.chmod(0o755)
    assert stat.S_IMODE(forward_dir().stat().st_mode) == 0o700
    path.rmdir()
    path.symlink_to("/tmp")
    with pytest.raises(ForwardError, match="not a directory owned by you"):
        forward_dir()
    path.unlink()
