"""CPU and memory of this machine, the only telemetry a host without an NVIDIA GPU has."""

from __future__ import annotations

import os

import psutil

from seglab.telemetry.sample import HostSample, HostState, HostStatus

NO_GPU = "no NVIDIA GPU"


def local_host_sample() -> HostSample:
    """CPU count and use, memory used/total and the 1-minute load of this machine."""
    memory = psutil.virtual_memory()
    mib = 1024 * 1024
    return HostSample(
        cpu_count=psutil.cpu_count(),
        cpu_percent=psutil.cpu_percent(interval=None),
        memory_used_mib=(memory.total - memory.available) / mib,
        memory_total_mib=memory.total / mib,
        load_1m=os.getloadavg()[0],
    )


def no_gpu_state(host: str, reason: str | None, now: float) -> HostState:
    """The state of a host that has no NVIDIA GPU (still usable for CPU runs)."""
    message = f"{NO_GPU} ({reason})" if reason else NO_GPU
    return HostState(
        host=host,
        source="none",
        status=HostStatus.NO_GPU,
        message=message,
        host_sample=local_host_sample(),
        updated=now,
    )
