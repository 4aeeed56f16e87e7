"""Placement of runs on GPUs: `--on` specs, free-GPU rules, atomic reservations.

``--on`` takes a comma-separated list of host pools:

- ``auto`` — every GPU of every host (the default);
- ``HOST`` — every GPU of that host;
- ``HOST:cpu`` — that host's CPU (no GPU is reserved; any number of runs share it, or at
  most the host's ``cpu_slots`` at once);
- ``HOST:0,1`` / ``HOST:0-3`` / ``HOST:GPU-<uuid>`` — those GPUs of that host.

Each run takes ``resources.gpus`` GPUs from one host of the pools; a multi-node run
(``resources.nodes: N``) takes that many from each of N pools (``auto``: N hosts), one
member per pool. A GPU is free when no
seglab run holds it (registry reservation) and no foreign process uses more memory on it
than the host's ``gpu_memory_threshold_mib``. Reservation of a run's GPUs is one atomic
registry transaction, so two seglab processes never put two runs on one GPU.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from seglab.errors import PlacementError, did_you_mean
from seglab.hosts import Inventory
from seglab.registry import Registry, RunStatus
from seglab.telemetry.sample import GpuSample, HostState, HostStatus

_RANGE = re.compile(r"^(\d+)-(\d+)$")
_GPU_TOKEN = re.compile(r"^(\d+(-\d+)?|(GPU|MIG)-[0-9A-Za-z/-]+)$")  # continues HOST:0,...


@dataclass(frozen=True)
class Pool:
    """GPUs (or the CPU) of one host that runs may be placed on."""

    host: str | None  # None: every host (auto)
    cpu: bool = False
    gpus: tuple[str, ...] = ()  # indices or UUIDs as the user gave them; empty: all

    def to_dict(self) -> dict[str, Any]:
        """JSON form, stored with queued runs."""
        return {"host": self.host, "cpu": self.cpu, "gpus": list(self.gpus)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pool:
        """Inverse of :meth:`to_dict`."""
        return cls(data["host"], bool(data["cpu"]), tuple(data["gpus"]))

    def __str__(self) -> str:
        if self.host is None:
            return "auto"
        if self.cpu:
            return f"{self.host}:cpu"
        return f"{self.host}:{','.join(self.gpus)}" if self.gpus else self.host


@dataclass(frozen=True)
class Placement:
    """Where one run goes: a host and the UUIDs of its GPUs (empty for CPU)."""

    host: str
    gpus: tuple[str, ...] = ()
    indices: tuple[int, ...] = ()

    @property
    def cpu(self) -> bool:
        """True for a CPU-only run."""
        return not self.gpus

    def __str__(self) -> str:
        if self.cpu:
            return f"{self.host}:cpu"
        return f"{self.host}:{','.join(str(i) for i in self.indices)}"


def _expand_gpu_token(token: str) -> list[str]:
    match = _RANGE.match(token)
    if match:
        low, high = int(match.group(1)), int(match.group(2))
        if low > high:
            raise PlacementError(f"GPU range {token!r} runs backwards")
        return [str(i) for i in range(low, high + 1)]
    return [token]


def parse_on(text: str) -> list[Pool]:
    """The pools of an ``--on`` value (see the module docstring)."""
    text = text.strip()
    if not text or text == "auto":
        return [Pool(None)]
    pools: list[Pool] = []
    host: str | None = None
    gpus: list[str] = []
    cpu = False

    def close() -> None:
        if host is not None:
            pools.append(Pool(host, cpu, tuple(gpus)))

    for raw in text.split(","):
        token = raw.strip()
        if not token:
            raise PlacementError(f"--on {text!r}: empty item")
        if ":" in token:
            close()
            host, _, rest = token.partition(":")
            gpus, cpu = [], False
            if not host:
                raise PlacementError(f"--on {text!r}: {token!r} lacks a host name")
            if rest == "cpu":
                cpu = True
            elif rest:
                gpus = _expand_gpu_token(rest)
            else:
                raise PlacementError(f"--on {text!r}: nothing after '{host}:'")
        elif token == "auto":
            raise PlacementError("--on auto cannot be combined with hosts")
        elif host is not None and _GPU_TOKEN.match(token) and (gpus or cpu):
            if cpu:
                raise PlacementError(f"--on {text!r}: GPUs listed after '{host}:cpu'")
            gpus.extend(_expand_gpu_token(token))
        else:  # a bare host name: all of its GPUs
            close()
            host, gpus, cpu = token, [], False
    close()
    return pools


@dataclass
class Scheduler:
    """Chooses placements from telemetry snapshots and registry reservations."""

    inventory: Inventory
    registry: Registry
    states: Mapping[str, HostState] = field(default_factory=dict)
    _cpu_placed: dict[str, set[str]] = field(default_factory=dict, init=False, repr=False)

    def member_pools(self, pools: Sequence[Pool]) -> list[Pool]:
        """The pools members of a multi-node run come from: one per host for ``auto``."""
        out: list[Pool] = []
        for pool in pools:
            if pool.host is None:
                out.extend(
                    Pool(name)
                    for name, host in self.inventory.hosts.items()
                    if host.kind != "slurm"
                )
            else:
                out.append(pool)
        return out

    def check_nodes(self, pools: Sequence[Pool], gpus_per_member: int, nodes: int) -> None:
        """Raise PlacementError for pools that could never hold ``nodes`` members."""
        members = self.member_pools(pools)
        if len(members) < nodes:
            raise PlacementError(
                f"the recipe spans {nodes} hosts (resources.nodes) but --on "
                f"{','.join(map(str, pools))} gives {len(members)} place(s) for members; "
                f"list one per member, such as lab1:0-7,lab2:0-7"
            )
        for pool in members:
            if not pool.cpu:
                self.check([pool], gpus_per_member)

    def place_members(
        self, pools: Sequence[Pool], gpus_per_member: int, nodes: int, run_id: str
    ) -> list[Placement] | None:
        """Reserve ``nodes`` members, one per pool (none when too few are free now)."""
        if nodes == 1:
            placement = self.place(pools, gpus_per_member, run_id)
            return None if placement is None else [placement]
        chosen: list[Placement] = []
        for pool in self.member_pools(pools):
            placement = self.place([pool], gpus_per_member, run_id)
            if placement is not None:
                chosen.append(placement)
                if len(chosen) == nodes:
                    return chosen
        self.registry.release(run_id)
        return None

    def check(self, pools: Sequence[Pool], gpus_per_run: int) -> None:
        """Raise PlacementError for pools that could never hold a run of this size."""
        largest = 0
        for pool in pools:
            hosts = [pool.host] if pool.host is not None else list(self.inventory.hosts)
            for name in hosts:
                self.inventory.get(name)  # UnknownHostError names the known hosts
                if pool.cpu:
                    largest = max(largest, gpus_per_run)
                    continue
                gpus = self._host_gpus(name)
                if pool.gpus:
                    chosen = [self._resolve(name, gpus, token) for token in pool.gpus]
                    largest = max(largest, len(chosen))
                else:
                    largest = max(largest, len(gpus))
        if largest == 0:
            raise PlacementError(self._no_gpu_message(pools))
        if largest < gpus_per_run:
            raise PlacementError(
                f"the recipe needs {gpus_per_run} GPUs per run (resources.gpus), but the "
                f"largest host in --on {','.join(map(str, pools))} has {largest}"
            )

    def _no_gpu_message(self, pools: Sequence[Pool]) -> str:
        reasons = []
        for pool in pools:
            hosts = [pool.host] if pool.host is not None else list(self.inventory.hosts)
            for name in hosts:
                state = self.states.get(name)
                why = state.message if state is not None and state.message else "no GPUs seen"
                reasons.append(f"{name}: {why}")
        return "no GPU to place on (" + "; ".join(reasons) + "); use --on HOST:cpu for a CPU run"

    def _host_gpus(self, host: str) -> list[GpuSample]:
        state = self.states.get(host)
        if state is None or state.status in (HostStatus.NO_GPU, HostStatus.ERROR):
            return []
        return sorted(state.gpus, key=lambda g: g.index)

    def _resolve(self, host: str, gpus: Sequence[GpuSample], token: str) -> GpuSample:
        for gpu in gpus:
            if token == gpu.uuid or (token.isdigit() and int(token) == gpu.index):
                return gpu
        known = [str(g.index) for g in gpus] + [g.uuid for g in gpus]
        listing = ", ".join(f"{g.index} ({g.uuid})" for g in gpus) or "none seen"
        raise PlacementError(
            f"{host} has no GPU {token!r}{did_you_mean(token, known)}; its GPUs: {listing}"
        )

    def busy_reason(self, host: str, gpu: GpuSample) -> str | None:
        """Why ``gpu`` is not free, or None when it is."""
        holder = self.registry.holders(host).get((host, gpu.uuid))
        if holder is not None:
            return f"held by seglab run {holder}"
        threshold = self.inventory.get(host).gpu_memory_threshold_mib
        for proc in gpu.processes:
            if proc.run_id is None and (proc.used_memory_mib or 0) > threshold:
                return f"used by {proc.owner} (pid {proc.pid}, {proc.used_memory_mib:.0f} MiB)"
        return None

    def place(self, pools: Sequence[Pool], gpus_per_run: int, run_id: str) -> Placement | None:
        """Reserve GPUs for ``run_id`` from the pools; None when too few are free now."""
        for pool in pools:
            hosts = [pool.host] if pool.host is not None else list(self.inventory.hosts)
            for name in hosts:
                if pool.cpu:
                    if self._take_cpu_slot(name, run_id):
                        return Placement(name)
                    continue
                gpus = self._host_gpus(name)
                if pool.gpus:
                    gpus = [self._resolve(name, gpus, token) for token in pool.gpus]
                free = [g for g in gpus if self.busy_reason(name, g) is None]
                if len(free) < gpus_per_run:
                    continue
                chosen = free[:gpus_per_run]
                uuids = tuple(g.uuid for g in chosen)
                if self.registry.reserve(name, uuids, run_id):
                    return Placement(name, uuids, tuple(g.index for g in chosen))
        return None

    def capacity(self, pool: Pool, gpus_per_run: int) -> tuple[int, int]:
        """For the host ``pool`` names: how many runs of ``gpus_per_run`` GPUs (or CPU
        runs, bounded by ``cpu_slots``) it holds at once, and how many fit now."""
        name = str(pool.host)
        if pool.cpu:
            slots = self.inventory.get(name).cpu_slots
            if slots is None:
                return (0, 0)
            return (slots, max(0, slots - len(self.cpu_runs(name))))
        gpus = self._host_gpus(name)
        if pool.gpus:
            gpus = [self._resolve(name, gpus, token) for token in pool.gpus]
        free = [g for g in gpus if self.busy_reason(name, g) is None]
        size = max(1, gpus_per_run)
        return (len(gpus) // size, len(free) // size)

    def cpu_runs(self, host: str) -> set[str]:
        """The runs holding one of ``host``'s CPU slots: CPU-only runs started and not
        ended, and the ones this scheduler placed there."""
        live = {
            record.run_id
            for record in self.registry.list_runs(include_finished=False, host=host)
            if not record.gpus and record.status != RunStatus.QUEUED
        }
        return live | self._cpu_placed.get(host, set())

    def _take_cpu_slot(self, host: str, run_id: str) -> bool:
        """Whether a CPU run may start on ``host`` now (``cpu_slots`` unset: always)."""
        slots = self.inventory.get(host).cpu_slots
        if slots is not None and len(self.cpu_runs(host) - {run_id}) >= slots:
            return False
        self._cpu_placed.setdefault(host, set()).add(run_id)
        return True

    def explain_busy(self, pools: Sequence[Pool]) -> str:
        """Why the pools' GPUs are busy, one clause per GPU (for errors and queue notes)."""
        parts = []
        for pool in pools:
            hosts = [pool.host] if pool.host is not None else list(self.inventory.hosts)
            for name in hosts:
                if pool.cpu:
                    holders = sorted(self.cpu_runs(name))
                    parts.append(
                        f"{name}: its {len(holders)} CPU slots (cpu_slots) held by "
                        f"{', '.join(holders)}"
                    )
                    continue
                gpus = self._host_gpus(name)
                if pool.gpus:
                    gpus = [self._resolve(name, gpus, token) for token in pool.gpus]
                for gpu in gpus:
                    reason = self.busy_reason(name, gpu)
                    if reason is not None:
                        parts.append(f"{name}:{gpu.index} {reason}")
        return "; ".join(parts) or "no free GPU"
