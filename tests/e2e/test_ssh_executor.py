"""Commands and long-lived streams over one real SSH connection, and what happens on link loss."""

from __future__ import annotations

import asyncio
import getpass
import re
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from seglab.hosts import load_inventory
from seglab.machines import CommandError
from seglab.remote.connection import ConnectOptions, HostConnection, LinkState
from seglab.remote.machine import SSHMachine
from seglab.remote.manager import RemoteHosts
from seglab.remote.tasks import cancel_and_wait
from seglab.telemetry.attribution import Attributor, machine_reader
from seglab.telemetry.sample import ProcessSample
from seglab.telemetry.smi import SmiSource
from tests.e2e.sshd import Lab, signal_process, write_hosts_yaml

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(90)]

FAST = ConnectOptions(backoff_initial=0.25, backoff_max=2.0)
QUERY = "--query-gpu=index,uuid,utilization.gpu,memory.used"


async def _until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `check()` holds (fails the test after `timeout`)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def _first_after(conn: HostConnection, state: LinkState, since: float) -> float | None:
    """Seconds from `since` to the first change to `state` after it (None: not yet)."""
    found = _change_after(conn, state, since)
    return None if found is None else found[0] - since


def _change_after(
    conn: HostConnection, state: LinkState, since: float
) -> tuple[float, str | None] | None:
    for when, seen, message in conn.counters.history:
        if seen is state and when >= since:
            return when, message
    return None


async def _with_remotes(body: Callable[[RemoteHosts], Awaitable[None]]) -> None:
    remotes = RemoteHosts(load_inventory(), FAST)
    await remotes.start()
    try:
        await remotes.connection("lab1").wait_for(LinkState.ONLINE, timeout=15)
        await body(remotes)
    finally:
        await remotes.stop()


def test_run_and_stream_over_one_connection(lab1: Lab) -> None:
    async def body(remotes: RemoteHosts) -> None:
        executor = remotes.machine("lab1")
        result = await executor.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
        assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
        quoted = await executor.run(["printf", "%s|", "a b", "$HOME", "it's"], timeout=10)
        assert quoted.stdout == "a b|$HOME|it's|"
        missing = await executor.run(["/nonexistent/nvidia-smi"], timeout=10)
        assert missing.returncode == 127

        stream = await executor.stream(
            [str(lab1.nvidia_smi), QUERY, "--format=csv,noheader,nounits", "-lms", "200"]
        )
        lines = [await stream.readline() for _ in range(6)]
        returncode, _ = await stream.finish()
        assert [line.split(", ")[0] for line in lines if line] == ["0", "1"] * 3
        assert all(line and line.split(", ")[1].startswith("GPU-") for line in lines)
        assert returncode is not None
        assert remotes.counts()["connects"] == 1

    asyncio.run(_with_remotes(body))


def test_link_loss_goes_offline_reconnects_and_telemetry_resumes(lab1: Lab) -> None:
    async def body(remotes: RemoteHosts) -> None:
        conn = remotes.connection("lab1")
        source = SmiSource(
            "lab1",
            remotes.machine("lab1"),
            nvidia_smi=str(lab1.nvidia_smi),
            interval=0.2,
            apps_interval=1.0,
            backoff=(0.2, 1.0),
        )
        task = asyncio.create_task(source.run())
        try:
            await _until(lambda: source.samples_total >= 6, 20, "the first samples")
            assert {gpu.index for gpu in source.state().gpus} == {0, 1}

            broken_at = time.monotonic()
            killed = await asyncio.to_thread(lab1.server.break_link)
            assert killed >= 1
            await _until(
                lambda: _first_after(conn, LinkState.OFFLINE, broken_at) is not None, 5, "offline"
            )
            offline_after = _first_after(conn, LinkState.OFFLINE, broken_at)
            assert offline_after is not None and offline_after < 5
            with pytest.raises(CommandError, match="host lab1 is"):
                await SSHMachine(conn, wait_online=0.5).run(["true"], timeout=5)

            await asyncio.sleep(3)  # the server stays down; the backoff grows to its cap
            assert conn.status.state is not LinkState.ONLINE
            samples_before = source.samples_total
            accepting_at = time.monotonic()
            await asyncio.to_thread(lab1.server.start)
            back = await _until(lambda: conn.status.state is LinkState.ONLINE, 5, "reconnect")
            assert back < 5
            resumed = await _until(
                lambda: source.samples_total >= samples_before + 4, 5, "telemetry resuming"
            )
            assert time.monotonic() - accepting_at < 10
            assert resumed < 5
            assert conn.counters.connects == 2
        finally:
            await cancel_and_wait(task)

    asyncio.run(_with_remotes(body))


def test_keepalive_notices_a_silent_link(lab1: Lab) -> None:
    """A frozen server (no FIN, no RST) is noticed by keepalives alone."""

    async def body(remotes: RemoteHosts) -> None:
        conn = remotes.connection("lab1")
        frozen = lab1.server.sessions()
        assert frozen
        stopped_at = time.monotonic()
        for proc in frozen:
            signal_process(proc, signal.SIGSTOP)
        try:
            await _until(
                lambda: _first_after(conn, LinkState.OFFLINE, stopped_at) is not None,
                6,
                "offline through keepalive",
            )
            offline_after = _first_after(conn, LinkState.OFFLINE, stopped_at)
            assert offline_after is not None and offline_after < 5
            change = _change_after(conn, LinkState.OFFLINE, stopped_at)
            assert change is not None
            assert "not responding to keepalive" in (change[1] or "")
        finally:
            for proc in frozen:
                signal_process(proc, signal.SIGKILL)
        await _until(lambda: conn.status.state is LinkState.ONLINE, 5, "reconnect")
        assert conn.counters.connects == 2

    asyncio.run(_with_remotes(body))


def test_attribution_reads_the_remote_proc_over_ssh(lab1: Lab) -> None:
    """The telemetry Attributor with the remote reader names a process's user and command."""
    sleeper = subprocess.Popen(["sleep", "60"])  # a process on the "remote" machine

    async def body(remotes: RemoteHosts) -> None:
        attribute = Attributor(machine_reader(remotes.machine("lab1")))
        sample = ProcessSample(
            pid=sleeper.pid, gpu_uuid="GPU-x", used_memory_mib=10.0, process_name="sleep"
        )
        gone = ProcessSample(
            pid=2**22 + 17, gpu_uuid="GPU-x", used_memory_mib=1.0, process_name="ghost"
        )
        found, missing = await attribute([sample, gone])
        assert (found.user, found.command) == (getpass.getuser(), "sleep 60")
        assert found.container_id is None
        assert (missing.user, missing.command) == (None, None)

    try:
        asyncio.run(_with_remotes(body))
    finally:
        sleeper.kill()
        sleeper.wait()


def test_proxyjump_from_ssh_config(lab1: Lab, isolated_xdg: Path) -> None:
    """A host behind `ProxyJump lab1` in ~/.ssh/config is reached through lab1."""
    server = lab1.server
    with lab1.home.config.open("a") as out:
        out.write(
            f"Host inner\n  HostName 127.0.0.1\n  Port {server.port}\n  User {server.user}\n"
            f"  IdentityFile {lab1.home.user_key}\n  ProxyJump lab1\n\n"
        )
    write_hosts_yaml(isolated_xdg / "config", {"inner": {"ssh": "inner"}})
    host = load_inventory().get("inner")
    assert host.ssh is not None and host.ssh.proxy_jump == "lab1"

    async def scenario() -> str:
        conn = HostConnection("inner", host.ssh, FAST)
        await conn.start()
        try:
            await conn.wait_for(LinkState.ONLINE, timeout=15)
            result = await SSHMachine(conn).run(["echo", "$SSH_CONNECTION"], timeout=10)
            env = await SSHMachine(conn).run(["sh", "-c", "echo $SSH_CONNECTION"], timeout=10)
            assert result.stdout == "$SSH_CONNECTION\n"
            return env.stdout
        finally:
            await conn.stop()

    ssh_connection = asyncio.run(scenario()).split()
    log = server.log.read_text()
    accepted = re.findall(r"Accepted publickey for \S+ from 127\.0\.0\.1 port (\d+)", log)
    sessions = set(re.findall(r"Starting session: command for \S+ from \S+ port (\d+)", log))
    # Two logins: first the jump host's, then the inner one (through the jump's
    # direct-tcpip channel); the commands ran on the inner connection only.
    assert len(accepted) == 2
    jump, inner = accepted
    assert sessions == {inner}
    assert ssh_connection[1] == inner and jump != inner
