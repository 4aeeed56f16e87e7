"""The machines seglab acts on: this one, and each remote host over its SSH connection.

:class:`~seglab.machines.base.Machine` is the one interface (run a command, stream one,
read/write/list files, forward a port, reach the Docker engine); :class:`LocalMachine`
implements it here and :class:`seglab.remote.machine.SSHMachine` over SSH. Synchronous code
uses a :class:`MachineSync` on the process's one event-loop thread (:class:`LoopThread`).
The workstation façade hands out the right one per host (``Workstation.machine(name)``).
"""

from __future__ import annotations

from seglab.machines.base import (
    CommandError,
    CommandResult,
    Forwarded,
    Machine,
    MachineSync,
    Stream,
)
from seglab.machines.local import LocalMachine
from seglab.machines.loop import LoopThread

__all__ = [
    "CommandError",
    "CommandResult",
    "Forwarded",
    "LocalMachine",
    "LoopThread",
    "Machine",
    "MachineSync",
    "Stream",
]
