"""Network failures of the SSH layer in plain words, one line naming the host, from real
sockets: a name that does not resolve, a closed loopback port, a port that never answers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from seglab.hosts import SSHTarget
from seglab.remote.connection import ConnectOptions, HostConnection, LinkState, network_reason

FAST = ConnectOptions(connect_timeout=1.0, backoff_initial=30.0, backoff_max=30.0)


def _offline_message(target: SSHTarget) -> str:
    """The message a real connection attempt to ``target`` ends with."""

    async def attempt() -> str:
        conn = HostConnection("lab9", target, FAST)
        await conn.start()
        try:
            status = await conn.wait_for(LinkState.OFFLINE, timeout=20)
        finally:
            await conn.stop()
        assert status.message is not None
        return status.message

    return asyncio.run(attempt())


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def _one_line(message: str) -> None:
    assert "\n" not in message
    assert "Unknown error" not in message and "Errno" not in message


def test_a_name_that_does_not_resolve() -> None:
    message = _offline_message(SSHTarget(user=None, hostname="nosuchhost.invalid", port=22))
    _one_line(message)
    assert "nosuchhost.invalid" in message
    assert "does not resolve" in message or "cannot be resolved now" in message


def test_a_closed_port_refuses(closed_port: int) -> None:
    message = _offline_message(SSHTarget(user=None, hostname="127.0.0.1", port=closed_port))
    _one_line(message)
    assert f"connection refused by 127.0.0.1 port {closed_port}" in message


def test_a_silent_port_times_out(silent_port: int) -> None:
    message = _offline_message(SSHTarget(user=None, hostname="127.0.0.1", port=silent_port))
    _one_line(message)
    assert f"timed out connecting to 127.0.0.1 port {silent_port}" in message


def test_the_reason_words_of_each_socket_failure() -> None:
    target = SSHTarget(user=None, hostname="lab9.example", port=2222)
    cases = {
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"): "does not resolve",
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure"): "DNS does not answer",
        ConnectionRefusedError(111, "Connection refused"): "connection refused",
        TimeoutError(): "timed out",
        OSError(113, "No route to host"): "cannot be reached",
    }
    for exc, words in cases.items():
        reason = network_reason(exc, target)
        _one_line(reason)
        assert words in reason and "lab9.example" in reason, reason
