"""The telemetry sample model shared by every source, the CLI, the TUI and the exporter.

A value the driver does not give is ``None``, never 0. ``to_dict`` gives the documented
JSON shape (snake_case keys, numbers as numbers, null for missing values).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """A process holding GPU memory, with what it belongs to where that can be found."""

    pid: int
    gpu_uuid: str
    used_memory_mib: float | None
    process_name: str | None
    container_id: str | None = None
    container_name: str | None = None
    run_id: str | None = None
    user: str | None = None
    command: str | None = None

    @property
    def owner(self) -> str:
        """Who to show for this process: the seglab run, the container, or user + command."""
        if self.run_id:
            return self.run_id
        if self.container_name or self.container_id:
            return f"container {self.container_name or (self.container_id or '')[:12]}"
        what = self.command or self.process_name or str(self.pid)
        return f"{self.user}: {what}" if self.user else what


@dataclass(frozen=True, slots=True)
class MigInstance:
    """One MIG device of a GPU in MIG mode."""

    index: int
    profile: str | None = None
    uuid: str | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    sm_count: int | None = None


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One reading of one GPU."""

    host: str
    index: int
    uuid: str
    name: str | None = None
    pci_bus_id: str | None = None
    utilization_gpu: float | None = None
    utilization_memory: float | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    temperature_c: float | None = None
    power_draw_w: float | None = None
    power_limit_w: float | None = None
    fan_percent: float | None = None
    clock_sm_mhz: float | None = None
    clock_memory_mhz: float | None = None
    pstate: str | None = None
    ecc_volatile_uncorrected: int | None = None
    mig_mode: str | None = None
    throttle_reasons: tuple[str, ...] | None = None
    energy_mj: float | None = None  # NVML's total energy since the driver loaded
    time: float = 0.0
    processes: tuple[ProcessSample, ...] = ()
    mig_instances: tuple[MigInstance, ...] = ()

    @property
    def memory_fraction(self) -> float | None:
        """Used / total memory (0-1), or None when either is unknown."""
        if self.memory_used_mib is None or not self.memory_total_mib:
            return None
        return self.memory_used_mib / self.memory_total_mib

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (processes and MIG instances nested)."""
        out = asdict(self)
        out["throttle_reasons"] = (
            list(self.throttle_reasons) if self.throttle_reasons is not None else None
        )
        return out


@dataclass(frozen=True, slots=True)
class HostSample:
    """CPU and memory of a host (shown for every host, the only thing on GPU-less ones)."""

    cpu_count: int | None
    cpu_percent: float | None
    memory_used_mib: float | None
    memory_total_mib: float | None
    load_1m: float | None


class HostStatus(str, enum.Enum):
    """How far a host's telemetry can be trusted right now."""

    STARTING = "starting"
    OK = "ok"
    DEGRADED = "degraded"
    NO_GPU = "no_gpu"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class HostState:
    """Everything known about one host's GPUs at one moment."""

    host: str
    source: str
    status: HostStatus
    message: str | None = None
    gpus: tuple[GpuSample, ...] = ()
    host_sample: HostSample | None = None
    updated: float | None = None
    driver_version: str | None = None
    restarts: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by ``seglab gpus --json``."""
        return {
            "host": self.host,
            "source": self.source,
            "status": self.status.value,
            "message": self.message,
            "driver_version": self.driver_version,
            "updated": self.updated,
            "restarts": self.restarts,
            "host_sample": asdict(self.host_sample) if self.host_sample else None,
            "gpus": [gpu.to_dict() for gpu in self.gpus],
        }
