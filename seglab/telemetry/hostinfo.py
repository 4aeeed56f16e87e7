"""CPU and memory of this machine, the only telemetry a host without an NVIDIA GPU has."""

from __future__ import annotations

import os
import threading
import time

import psutil

from seglab.telemetry.sample import HostSample, HostState, HostStatus

NO_GPU = "no NVIDIA GPU"


class _CpuMeter:
    """CPU use since the previous reading (psutil's first reading has no meaning)."""

    MIN_WINDOW = 0.1  # seconds; a shorter window is mostly noise

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since = time.monotonic()
        self._value: float | None = None
        psutil.cpu_percent(interval=None)

    def percent(self) -> float | None:
        """The latest CPU use (%), or None until a long enough window has passed."""
        with self._lock:
            now = time.monotonic()
            if now - self._since >= self.MIN_WINDOW:
                self._value = psutil.cpu_percent(interval=None)
                self._since = now
            return self._value


_CPU = _CpuMeter()


def local_host_sample() -> HostSample:
    """CPU count and use, memory used/total and the 1-minute load of this machine."""
    memory = psutil.virtual_memory()
    mib = 1024 * 1024
    return HostSample(
        cpu_count=psutil.cpu_count(),
        cpu_percent=_CPU.percent(),
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
