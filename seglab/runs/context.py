"""What every part of the run lifecycle works with, given once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from seglab.hosts import Inventory
from seglab.registry import Registry, RunRecord
from seglab.runs.hostio import HostIO
from seglab.runs.runtimes import Runtimes


@dataclass(frozen=True)
class RunContext:
    """The inventory, the registry, the runtimes, host I/O and the status refresh."""

    inventory: Inventory
    registry: Registry
    runtimes: Runtimes
    io: HostIO
    refresh: Callable[[RunRecord], RunRecord]


class Part:
    """A part of the run lifecycle; its context's members are attributes."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.inventory = ctx.inventory
        self.registry = ctx.registry
        self.runtimes = ctx.runtimes
        self.io = ctx.io
        self.refresh = ctx.refresh
