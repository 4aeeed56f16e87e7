"""Every remote host of the inventory, each with its one SSH connection and what rides on it.

:class:`RemoteHosts` is what the workstation façade holds (through its bridge): a host is
connected on first use (``start``) and its Docker socket forwarded; ``machine(name)`` is the
host as a :class:`~seglab.machines.base.Machine` (commands, files, ports, engine), and
``state(name)``, ``report(name)`` serve the CLI and the dashboard. Use it inside one running
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from seglab.hosts import Host, Inventory, UnknownHostError
from seglab.remote.connection import ConnectOptions, HostConnection, LinkState, LinkStatus
from seglab.remote.files import RemoteFiles
from seglab.remote.forward import SocketForward, local_socket_path
from seglab.remote.machine import SSHMachine
from seglab.remote.status import HostReport, probe

# Each RemoteHosts of a process forwards to sockets of its own: stopping one set of
# forwards (another seglab, a second stack in this process) never removes a path another
# still serves.
_SERIAL = itertools.count()


@dataclass
class _Remote:
    host: Host
    connection: HostConnection
    forward: SocketForward
    machine: SSHMachine


class RemoteHosts:
    """The SSH side of the inventory: one connection per remote host."""

    def __init__(self, inventory: Inventory, options: ConnectOptions | None = None) -> None:
        self._remotes: dict[str, _Remote] = {}
        self._names = [host.name for host in inventory if host.ssh is not None]
        self.started: set[str] = set()
        serial = next(_SERIAL)
        for host in inventory:
            if host.ssh is None:
                continue
            connection = HostConnection(host.name, host.ssh, options)
            forward = SocketForward(
                connection,
                host.docker_socket,
                local_socket_path(host.name, f"docker-{os.getpid()}-{serial}"),
            )
            self._remotes[host.name] = _Remote(
                host=host,
                connection=connection,
                forward=forward,
                machine=SSHMachine(
                    connection, docker=forward, start=functools.partial(self.start, [host.name])
                ),
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
            self.started.add(name)

    async def stop(self) -> None:
        """Close every forward and connection."""
        for remote in self._remotes.values():
            for port in list(remote.machine.ports):
                await port.stop()
            await remote.forward.stop()
        await asyncio.gather(*(r.connection.stop() for r in self._remotes.values()))

    def connection(self, name: str) -> HostConnection:
        """Host `name`'s supervised connection."""
        return self._get(name).connection

    def state(self, name: str) -> LinkStatus:
        """Host `name`'s link state and message."""
        return self._get(name).connection.status

    def links(self) -> dict[str, tuple[str, str | None]]:
        """Link state and message of each host started so far."""
        out: dict[str, tuple[str, str | None]] = {}
        for name in self._names:
            if name in self.started:
                status = self.state(name)
                out[name] = (status.state.value, status.message)
        return out

    def docker_socket(self, name: str) -> Path:
        """The local socket forwarding host `name`'s Docker engine."""
        return self._get(name).forward.local_path

    def machine(self, name: str) -> SSHMachine:
        """Host `name` as a machine (connected on first use)."""
        return self._get(name).machine

    def files(self, name: str) -> RemoteFiles:
        """SFTP access to host `name`'s run directories (``seglab pull``)."""
        return self._get(name).machine.files

    async def report(self, name: str) -> HostReport:
        """Host `name`'s status for `seglab hosts` (versions, GPUs, Docker)."""
        remote = self._get(name)
        socket = remote.forward.local_path if remote.forward.established else None
        return await probe(remote.machine, remote.host.nvidia_smi, socket)

    def counts(self) -> dict[str, int]:
        """Open connections and the channels the executors have opened (for benchmarks)."""
        return {
            "connections": sum(r.connection.is_online for r in self._remotes.values()),
            "connects": sum(r.connection.counters.connects for r in self._remotes.values()),
            "executor_channels": sum(r.machine.channels_opened for r in self._remotes.values()),
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
