"""Every remote host of the inventory, each with its one SSH connection and what rides on it.

:class:`RemoteHosts` is what the workstation façade holds: ``start()`` connects to every
host that has an ``ssh`` target and forwards its Docker socket; afterwards ``state(name)``,
``docker_socket(name)``, ``executor(name)``, ``files(name)`` and ``report(name)`` serve the
runtime, telemetry, registry and CLI. Use it inside one running event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from seglab.hosts import Host, Inventory, UnknownHostError
from seglab.remote.connection import ConnectOptions, HostConnection, LinkState, LinkStatus
from seglab.remote.executor import RemoteExecutor
from seglab.remote.files import RemoteFiles
from seglab.remote.forward import PortForward, SocketForward, local_socket_path
from seglab.remote.status import HostReport, probe


@dataclass
class _Remote:
    host: Host
    connection: HostConnection
    forward: SocketForward
    executor: RemoteExecutor
    files: RemoteFiles
    ports: list[PortForward] = field(default_factory=list)


class RemoteHosts:
    """The SSH side of the inventory: one connection per remote host."""

    def __init__(self, inventory: Inventory, options: ConnectOptions | None = None) -> None:
        self._remotes: dict[str, _Remote] = {}
        self._names = [host.name for host in inventory if host.ssh is not None]
        for host in inventory:
            if host.ssh is None:
                continue
            connection = HostConnection(host.name, host.ssh, options)
            self._remotes[host.name] = _Remote(
                host=host,
                connection=connection,
                # One socket per process: another seglab (the TUI, a second command)
                # stopping its forward must not remove the path this one still uses.
                forward=SocketForward(
                    connection,
                    host.docker_socket,
                    local_socket_path(host.name, f"docker-{os.getpid()}"),
                ),
                executor=RemoteExecutor(connection),
                files=RemoteFiles(connection),
            )

    @property
    def names(self) -> list[str]:
        """The remote hosts, in inventory order."""
        return list(self._names)

    def _get(self, name: str) -> _Remote:
        try:
            return self._remotes[name]
        except KeyError:
            raise UnknownHostError(name, self._names) from None

    async def start(self, names: Iterable[str] | None = None) -> None:
        """Connect to `names` (default: every remote host) and keep the forwards up."""
        for name in names if names is not None else self._names:
            remote = self._get(name)
            await remote.forward.start()
            await remote.connection.start()

    async def stop(self) -> None:
        """Close every forward and connection."""
        for remote in self._remotes.values():
            for port in remote.ports:
                await port.stop()
            remote.ports.clear()
            await remote.forward.stop()
        await asyncio.gather(*(r.connection.stop() for r in self._remotes.values()))

    def connection(self, name: str) -> HostConnection:
        """Host `name`'s supervised connection."""
        return self._get(name).connection

    def state(self, name: str) -> LinkStatus:
        """Host `name`'s link state and message."""
        return self._get(name).connection.status

    def docker_socket(self, name: str) -> Path:
        """The local socket forwarding host `name`'s Docker engine (for ``unix://``)."""
        return self._get(name).forward.local_path

    def executor(self, name: str) -> RemoteExecutor:
        """The telemetry executor for host `name`."""
        return self._get(name).executor

    def files(self, name: str) -> RemoteFiles:
        """SFTP access to host `name`'s run directories."""
        return self._get(name).files

    async def forward_port(
        self, name: str, remote_port: int, remote_host: str = "127.0.0.1", local_port: int = 0
    ) -> PortForward:
        """Forward host `name`'s `remote_host:remote_port` to 127.0.0.1 (kept across
        reconnects, closed by :meth:`close_port` or :meth:`stop`)."""
        remote = self._get(name)
        forward = PortForward(remote.connection, remote_port, remote_host, local_port)
        await forward.start()
        remote.ports.append(forward)
        return forward

    async def close_port(self, forward: PortForward) -> None:
        """Stop one port forward made by :meth:`forward_port`."""
        await forward.stop()
        for remote in self._remotes.values():
            if forward in remote.ports:
                remote.ports.remove(forward)

    async def report(self, name: str) -> HostReport:
        """Host `name`'s status for `seglab hosts` (versions, GPUs, Docker)."""
        remote = self._get(name)
        socket = remote.forward.local_path if remote.forward.established else None
        return await probe(remote.connection, remote.host.nvidia_smi, socket)

    def counts(self) -> dict[str, int]:
        """Open connections and the channels the executors have opened (for benchmarks)."""
        return {
            "connections": sum(r.connection.is_online for r in self._remotes.values()),
            "connects": sum(r.connection.counters.connects for r in self._remotes.values()),
            "executor_channels": sum(r.executor.channels_opened for r in self._remotes.values()),
        }


SETTLED = (LinkState.ONLINE, LinkState.OFFLINE, LinkState.AUTH_FAILED, LinkState.HOST_KEY_REFUSED)


async def check_hosts(
    inventory: Inventory,
    names: Iterable[str] | None = None,
    timeout: float = 15.0,
    options: ConnectOptions | None = None,
) -> list[HostReport]:
    """Connect to each remote host once, report its status, disconnect (`seglab hosts`).

    A host that has not settled (online or failed) within `timeout` s is reported as it
    stands then (``connecting``).
    """
    remotes = RemoteHosts(inventory, options)
    chosen = list(names) if names is not None else remotes.names
    await remotes.start(chosen)
    try:

        async def one(name: str) -> HostReport:
            with contextlib.suppress(asyncio.TimeoutError):  # reported as still connecting
                await remotes.connection(name).wait_for(*SETTLED, timeout=timeout)
            return await remotes.report(name)

        return list(await asyncio.gather(*(one(name) for name in chosen)))
    finally:
        await remotes.stop()
