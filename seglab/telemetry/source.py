"""Choosing a telemetry source per host, and running the sources of many hosts together.

Per host (hosts.yaml): ``telemetry: auto | nvml | nvidia-smi``, ``nvidia_smi: PATH`` and
``telemetry_interval``. ``auto`` uses NVML on this machine when the driver answers, else
nvidia-smi when it can be found, else reports "no NVIDIA GPU" with CPU and memory; a
remote host always streams nvidia-smi on its :class:`~seglab.machines.base.Machine` (over
SSH). :class:`Telemetry` runs the sources of many hosts as tasks of one event loop.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from types import ModuleType
from typing import Protocol

from seglab.machines import LocalMachine, Machine
from seglab.telemetry.attribution import Attributor, DockerLabels, local_reader, machine_reader
from seglab.telemetry.history import HistoryStore
from seglab.telemetry.hostinfo import local_host_sample, no_gpu_state
from seglab.telemetry.nvml import NvmlSource, NvmlUnavailable, explain
from seglab.telemetry.sample import GpuSample, HostState, HostStatus, ProcessSample
from seglab.telemetry.smi import SmiSource

log = logging.getLogger(__name__)

MODES = ("auto", "nvml", "nvidia-smi")

Attribute = Callable[[list[ProcessSample]], Awaitable[list[ProcessSample]]]


class HostConfig(Protocol):
    """What telemetry needs from a host of the inventory (``seglab.hosts.Host``)."""

    @property
    def name(self) -> str: ...
    @property
    def is_local(self) -> bool: ...
    @property
    def telemetry(self) -> str: ...
    @property
    def nvidia_smi(self) -> str: ...
    @property
    def telemetry_interval(self) -> float: ...


class TelemetrySource(Protocol):
    """One host's GPU readings (:class:`SmiSource`, :class:`NvmlSource`, :class:`FixedSource`)."""

    host: str

    async def run(self) -> None:
        """Keep reading until cancelled."""

    def state(self) -> HostState:
        """What is known now."""

    async def wait_ready(self, timeout: float) -> HostState:
        """The first full reading, or the state that explains why there is none."""

    async def next_change(self) -> HostState:
        """The state after the next reading or status change."""


class FixedSource:
    """A host whose state does not change: no NVIDIA GPU, or telemetry that cannot start."""

    def __init__(self, state: HostState) -> None:
        self.host = state.host
        self._state = state
        self._never = asyncio.Event()

    async def run(self) -> None:
        """Nothing to read."""

    def state(self) -> HostState:
        """The fixed state."""
        return self._state

    async def wait_ready(self, timeout: float) -> HostState:
        """The fixed state, at once."""
        return self._state

    async def next_change(self) -> HostState:
        """Never returns: nothing changes."""
        await self._never.wait()
        return self._state


def probe_nvml(nvml: ModuleType | None = None) -> NvmlUnavailable | None:
    """Whether NVML answers on this machine (None) or why not (blocking: run in a thread)."""
    module = nvml or importlib.import_module("pynvml")
    try:
        module.nvmlInit()
    except module.NVMLError as exc:
        return explain(module, exc)
    module.nvmlShutdown()
    return None


def nvidia_smi_found(command: str) -> bool:
    """Whether an nvidia-smi command resolves on this machine (a path or a PATH name)."""
    if os.sep in command:
        return os.access(command, os.X_OK)
    return shutil.which(command) is not None


async def make_source(
    host: HostConfig,
    machine: Machine | None = None,
    *,
    attribute: Attribute | None = None,
    on_sample: Callable[[GpuSample], None] | None = None,
    nvml: ModuleType | None = None,
) -> TelemetrySource:
    """The source ``host``'s configuration asks for (``machine`` runs its commands)."""
    mode = host.telemetry
    if mode not in MODES:
        raise ValueError(f"host {host.name}: telemetry must be one of {', '.join(MODES)}")
    interval = host.telemetry_interval
    if not host.is_local and machine is None:
        return FixedSource(
            HostState(
                host=host.name,
                source=mode,
                status=HostStatus.ERROR,
                message="no connection to this host (the SSH layer is not available)",
            )
        )
    if mode == "nvml" or (mode == "auto" and host.is_local):
        if not host.is_local:
            raise ValueError(f"host {host.name}: nvml reads this machine's GPUs only")
        problem = await asyncio.to_thread(probe_nvml, nvml)
        if problem is None or mode == "nvml":
            return NvmlSource(
                host.name, interval=interval, nvml=nvml, attribute=attribute, on_sample=on_sample
            )
        if not (problem.no_gpu and nvidia_smi_found(host.nvidia_smi)):
            return FixedSource(no_gpu_state(host.name, str(problem), time.time()))
    return SmiSource(
        host.name,
        machine or LocalMachine(host.name),
        nvidia_smi=host.nvidia_smi,
        interval=interval,
        missing_means_no_gpu=mode == "auto",
        attribute=attribute,
        on_sample=on_sample,
    )


class Telemetry:
    """The sources of a set of hosts, run as tasks of one event loop.

    ``states()`` is cheap and safe to call from the exporter's HTTP thread: it only reads
    the latest immutable states.
    """

    def __init__(self, history: HistoryStore | None = None) -> None:
        self.history = history or HistoryStore()
        self.sources: dict[str, TelemetrySource] = {}
        self._local: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._crashed: dict[str, str] = {}

    async def add_host(
        self,
        host: HostConfig,
        machine: Machine | None = None,
        docker_url: str | None = None,
        nvml: ModuleType | None = None,
    ) -> TelemetrySource:
        """Start reading ``host``.

        A local host reads /proc and the local Docker engine (or ``docker_url``); a remote
        one needs its ``machine`` and reads container labels through ``docker_url``
        (the forwarded engine socket, ``unix://...``) when given.
        """
        if host.is_local:
            attributor = Attributor(local_reader(), DockerLabels(base_url=docker_url))
            self._local.add(host.name)
        elif machine is not None:
            labels = DockerLabels(base_url=docker_url) if docker_url is not None else None
            attributor = Attributor(machine_reader(machine), labels)
        else:
            attributor = None
        source = await make_source(
            host, machine, attribute=attributor, on_sample=self.history.push, nvml=nvml
        )
        self.sources[host.name] = source
        self._tasks[host.name] = asyncio.create_task(self._run(source))
        return source

    async def _run(self, source: TelemetrySource) -> None:
        try:
            await source.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("telemetry of %s stopped", source.host)
            self._crashed[source.host] = f"telemetry stopped: {exc!r}"

    def states(self) -> list[HostState]:
        """Every host's current state (local hosts carry their CPU and memory)."""
        return [self._decorate(source.state()) for source in self.sources.values()]

    async def wait_ready(self, timeout: float) -> list[HostState]:
        """Wait until every host has a first reading (or a reason it has none)."""
        ready = await asyncio.gather(*(s.wait_ready(timeout) for s in self.sources.values()))
        return [self._decorate(state) for state in ready]

    def _decorate(self, state: HostState) -> HostState:
        if state.host in self._crashed:
            state = replace(state, status=HostStatus.ERROR, message=self._crashed[state.host])
        if state.host in self._local:  # read now: a no-GPU host's state is otherwise fixed
            state = replace(state, host_sample=local_host_sample())
        return state

    async def close(self) -> None:
        """Stop every source (their child processes are terminated)."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
