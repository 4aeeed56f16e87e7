"""Spreading waiting variants over several hosts' queues (``--on auto``, ``--on a,b``).

Variants that fit now start at once on a host of this machine (under its booking lock);
the others go to the queue of a host whose runner will start them: first a host with a
free GPU (or CPU slot) now (a remote host's runner places its runs itself), then the one
with the shortest expected wait, counted as the runs queued or going there per run slot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from seglab.hosts import Inventory
from seglab.registry import RunStatus
from seglab.runs.hostqueues import HostQueues
from seglab.scheduler import Pool, Scheduler


@dataclass
class Target:
    """A host whose queue may take waiting variants, as this submission counts it."""

    pool: Pool  # the pool naming that host
    slots: int  # runs of this size it holds at once
    free: int  # of which free now
    load: int  # runs queued or going there

    @property
    def wait(self) -> tuple[bool, float]:
        """Sort key: hosts with a free slot first, then the least load per slot."""
        return (self.free <= 0, self.load / max(1, self.slots))


def host_pools(inventory: Inventory, pools: Sequence[Pool]) -> list[Pool]:
    """One pool per host: ``auto`` becomes every host that is not a Slurm cluster."""
    out: list[Pool] = []
    for pool in pools:
        if pool.host is not None:
            out.append(pool)
            continue
        out.extend(
            Pool(host.name, pool.cpu, pool.gpus) for host in inventory if host.kind != "slurm"
        )
    return out


def queue_hosts(pools: Sequence[Pool], queues: HostQueues) -> dict[str, Pool]:
    """The hosts among ``pools`` whose queues serve single-node runs, with their pools."""
    out: dict[str, Pool] = {}
    for pool in host_pools(queues.inventory, pools):
        host = queues.host_for([pool], 1)
        if host is not None:
            out.setdefault(host.name, pool)
    return out


def targets(
    hosts: Mapping[str, Pool],
    queues: HostQueues,
    scheduler: Scheduler,
    gpus_per_run: int,
    placed: Mapping[str, int],
) -> dict[str, Target]:
    """The ``hosts`` (from :func:`queue_hosts`) that can ever hold runs of this size,
    counted now (``placed``: runs this submission starts there, not yet registered)."""
    out: dict[str, Target] = {}
    for name, pool in hosts.items():
        slots, free = scheduler.capacity(pool, gpus_per_run)
        if slots == 0:
            continue
        going = scheduler.registry.list_runs(include_finished=False, host=name)
        load = sum(record.status != RunStatus.QUEUED for record in going) + placed.get(name, 0)
        waiting = len(queues.access(queues.inventory.get(name)).items())
        out[name] = Target(pool, slots, free, load + waiting)
    return out


def choose(found: dict[str, Target]) -> str:
    """The host for the next waiting variant (and count it there)."""
    name = min(found, key=lambda n: (found[n].wait, n))
    found[name].free -= 1
    found[name].load += 1
    return name
