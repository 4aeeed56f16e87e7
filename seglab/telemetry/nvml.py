"""The NVML source for local GPUs (pynvml from nvidia-ml-py).

NVML is initialised once and device handles are cached. Fast-changing values (utilisation,
memory used, temperature, power, fan, clocks, pstate, throttle reasons) are read every
interval; slow ones (name, UUID, bus id, memory total, power limit, ECC, MIG devices) and
the process lists less often. Every call is guarded: an unsupported value is None, and a
missing or broken driver (library not found, driver not loaded, version mismatch, GPU
lost) becomes the host's state with a clear message, never a crash. NVML blocks, so every
call runs in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, TypeVar

from seglab.errors import UnavailableError
from seglab.telemetry import values
from seglab.telemetry.sample import GpuSample, HostState, HostStatus, MigInstance, ProcessSample

log = logging.getLogger(__name__)

T = TypeVar("T")
MIB = 1024 * 1024

# NVML return codes that mean "this value does not exist here" rather than "NVML is broken".
_ABSENT_CODES = (
    "NOT_SUPPORTED",
    "NO_PERMISSION",
    "NOT_FOUND",
    "INVALID_ARGUMENT",
    "FUNCTION_NOT_FOUND",
    "NO_DATA",
    "UNKNOWN",
    "INSUFFICIENT_SIZE",
)


class NvmlUnavailable(UnavailableError):
    """NVML cannot report; ``no_gpu`` says whether that just means there is no NVIDIA GPU."""

    def __init__(self, message: str, no_gpu: bool = False) -> None:
        super().__init__(message)
        self.no_gpu = no_gpu


def explain(nvml: ModuleType, exc: Exception) -> NvmlUnavailable:
    """The host-state message for an NVML error."""
    value = getattr(exc, "value", None)
    if value == getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", object()):
        return NvmlUnavailable("NVML library libnvidia-ml.so.1 not found", no_gpu=True)
    if value == getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", object()):
        return NvmlUnavailable("the NVIDIA kernel driver is not loaded", no_gpu=True)
    if value == getattr(nvml, "NVML_ERROR_LIB_RM_VERSION_MISMATCH", object()):
        return NvmlUnavailable(
            "NVML and the kernel driver versions differ (driver updated without a reboot?)"
        )
    if value == getattr(nvml, "NVML_ERROR_GPU_IS_LOST", object()):
        return NvmlUnavailable("a GPU fell off the bus (GPU is lost); the host needs attention")
    return NvmlUnavailable(f"NVML error: {exc}")


@dataclass
class _Device:
    """A cached handle and the slow-changing values read less often."""

    index: int
    handle: Any
    slow: dict[str, Any] = field(default_factory=dict)
    processes: tuple[ProcessSample, ...] = ()
    migs: tuple[MigInstance, ...] = ()


class NvmlSource:
    """GPU telemetry of this machine through NVML."""

    kind = "nvml"

    def __init__(
        self,
        host: str = "local",
        *,
        interval: float = 1.0,
        slow_interval: float = 30.0,
        apps_interval: float = 5.0,
        backoff: tuple[float, float] = (1.0, 60.0),
        nvml: ModuleType | None = None,
        attribute: Callable[[list[ProcessSample]], Awaitable[list[ProcessSample]]] | None = None,
        on_sample: Callable[[GpuSample], None] | None = None,
    ) -> None:
        self.host = host
        self.interval = interval
        self.slow_interval = slow_interval
        self.apps_interval = apps_interval
        self.backoff = backoff
        self.attribute = attribute
        self.on_sample = on_sample
        self.samples_total = 0
        self.poll_cpu_seconds = 0.0
        self._nvml_module = nvml
        self._nvml: ModuleType | None = None
        self._devices: list[_Device] = []
        self._driver: str | None = None
        self._latest: dict[int, GpuSample] = {}
        self._status = HostStatus.STARTING
        self._message: str | None = "starting NVML"
        self._updated: float | None = None
        self._restarts = 0
        self._changed = asyncio.Event()

    # -- reading ----------------------------------------------------------------------

    def state(self) -> HostState:
        """What is known now."""
        gpus = tuple(self._latest[i] for i in sorted(self._latest))
        return HostState(
            host=self.host,
            source=self.kind,
            status=self._status,
            message=self._message,
            gpus=gpus,
            updated=self._updated,
            driver_version=self._driver,
            restarts=self._restarts,
        )

    async def next_change(self) -> HostState:
        """Wait for the next reading or status change."""
        await self._changed.wait()
        return self.state()

    async def wait_ready(self, timeout: float) -> HostState:
        """Wait for the first full reading or a failure state."""
        try:
            while self._status is HostStatus.STARTING:
                await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            return replace(
                self.state(),
                status=HostStatus.DEGRADED,
                message=f"no reading from NVML within {timeout:g} s",
            )
        return self.state()

    # -- running ----------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled; a broken driver is retried with backoff."""
        delay = self.backoff[0]
        last_slow = last_apps = -float("inf")
        while True:
            try:
                if self._nvml is None:
                    await asyncio.to_thread(self._init)
                    last_slow = last_apps = -float("inf")
                now = time.monotonic()
                slow = now - last_slow >= self.slow_interval
                apps = now - last_apps >= self.apps_interval
                await asyncio.to_thread(self._poll, slow, apps)
                if slow:
                    last_slow = now
                if apps:
                    last_apps = now
                    await self._attribute()
                self._updated = time.time()
                self._set(HostStatus.OK, None)
                delay = self.backoff[0]
                await asyncio.sleep(self.interval)
            except NvmlUnavailable as exc:
                await asyncio.to_thread(self._shutdown)
                if exc.no_gpu and not self._latest:
                    self._set(HostStatus.NO_GPU, f"no NVIDIA GPU ({exc})")
                    return
                self._restarts += 1
                self._set(HostStatus.DEGRADED, f"{exc}; retrying in {delay:g} s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])

    def _init(self) -> None:
        nvml = self._nvml_module or importlib.import_module("pynvml")
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
            devices = [_Device(i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
        except nvml.NVMLError as exc:
            raise explain(nvml, exc) from exc
        if not devices:
            nvml.nvmlShutdown()
            raise NvmlUnavailable("NVML reports no GPUs", no_gpu=True)
        self._driver = self._guard(nvml, nvml.nvmlSystemGetDriverVersion)
        self._nvml = nvml
        self._devices = devices

    def _shutdown(self) -> None:
        nvml, self._nvml = self._nvml, None
        if nvml is None:
            return
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            log.debug("nvmlShutdown after a failure: %s", exc)

    def _guard(self, nvml: ModuleType, fn: Callable[..., T], *args: Any) -> T | None:
        """Call NVML; None for a value this GPU lacks, NvmlUnavailable when NVML is broken."""
        try:
            return fn(*args)
        except nvml.NVMLError as exc:
            value = getattr(exc, "value", None)
            for code in _ABSENT_CODES:
                if value == getattr(nvml, f"NVML_ERROR_{code}", object()):
                    return None
            raise explain(nvml, exc) from exc

    def _poll(self, slow: bool, apps: bool) -> None:
        nvml = self._nvml
        assert nvml is not None
        started = time.thread_time()
        for device in self._devices:
            if slow or not device.slow:
                device.slow = self._read_slow(nvml, device)
                device.migs = self._read_migs(nvml, device)
            if apps:
                device.processes = self._read_processes(nvml, device)
            sample = self._read_fast(nvml, device)
            self._latest[device.index] = sample
            self.samples_total += 1
            if self.on_sample is not None:
                self.on_sample(sample)
        self.poll_cpu_seconds += time.thread_time() - started

    def _read_slow(self, nvml: ModuleType, device: _Device) -> dict[str, Any]:
        g, h = self._guard, device.handle
        pci = g(nvml, nvml.nvmlDeviceGetPciInfo, h)
        limit = g(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, h)
        memory = g(nvml, nvml.nvmlDeviceGetMemoryInfo, h)
        mig = g(nvml, nvml.nvmlDeviceGetMigMode, h)
        ecc = g(
            nvml,
            nvml.nvmlDeviceGetTotalEccErrors,
            h,
            nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            nvml.NVML_VOLATILE_ECC,
        )
        return {
            "uuid": _text(g(nvml, nvml.nvmlDeviceGetUUID, h)) or f"index-{device.index}",
            "name": _text(g(nvml, nvml.nvmlDeviceGetName, h)),
            "pci_bus_id": _text(pci.busId) if pci is not None else None,
            "power_limit_w": limit / 1000 if limit is not None else None,
            "memory_total_mib": memory.total / MIB if memory is not None else None,
            "mig_mode": None if mig is None else ("Enabled" if mig[0] else "Disabled"),
            "ecc_volatile_uncorrected": ecc,
        }

    def _read_fast(self, nvml: ModuleType, device: _Device) -> GpuSample:
        g, h = self._guard, device.handle
        util = g(nvml, nvml.nvmlDeviceGetUtilizationRates, h)
        memory = g(nvml, nvml.nvmlDeviceGetMemoryInfo, h)
        power = g(nvml, nvml.nvmlDeviceGetPowerUsage, h)
        pstate = g(nvml, nvml.nvmlDeviceGetPerformanceState, h)
        reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if reasons is None:  # drivers before the "clocks event" renaming
            reasons = nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        energy = getattr(nvml, "nvmlDeviceGetTotalEnergyConsumption", None)  # Volta and later
        return GpuSample(
            host=self.host,
            index=device.index,
            time=time.time(),
            utilization_gpu=util.gpu if util is not None else None,
            utilization_memory=util.memory if util is not None else None,
            memory_used_mib=memory.used / MIB if memory is not None else None,
            temperature_c=g(nvml, nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU),
            power_draw_w=power / 1000 if power is not None else None,
            fan_percent=g(nvml, nvml.nvmlDeviceGetFanSpeed, h),
            clock_sm_mhz=g(nvml, nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_SM),
            clock_memory_mhz=g(nvml, nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_MEM),
            pstate=f"P{pstate}" if pstate is not None and pstate < 32 else None,
            throttle_reasons=values.throttle_reasons(g(nvml, reasons, h)),
            energy_mj=g(nvml, energy, h) if energy is not None else None,
            processes=device.processes,
            mig_instances=device.migs,
            **device.slow,
        )

    def _read_processes(self, nvml: ModuleType, device: _Device) -> tuple[ProcessSample, ...]:
        g, h = self._guard, device.handle
        found: dict[int, ProcessSample] = {}
        uuid = device.slow.get("uuid", "")
        for call in (
            nvml.nvmlDeviceGetComputeRunningProcesses,
            nvml.nvmlDeviceGetGraphicsRunningProcesses,
        ):
            for proc in g(nvml, call, h) or []:
                used = getattr(proc, "usedGpuMemory", None)
                found.setdefault(
                    proc.pid,
                    ProcessSample(
                        pid=proc.pid,
                        gpu_uuid=uuid,
                        used_memory_mib=used / MIB if used is not None else None,
                        process_name=_text(g(nvml, nvml.nvmlSystemGetProcessName, proc.pid)),
                    ),
                )
        return tuple(found.values())

    def _read_migs(self, nvml: ModuleType, device: _Device) -> tuple[MigInstance, ...]:
        if device.slow.get("mig_mode") != "Enabled":
            return ()
        g, h = self._guard, device.handle
        out = []
        for i in range(g(nvml, nvml.nvmlDeviceGetMaxMigDeviceCount, h) or 0):
            mig = g(nvml, nvml.nvmlDeviceGetMigDeviceHandleByIndex, h, i)
            if mig is None:
                continue
            memory = g(nvml, nvml.nvmlDeviceGetMemoryInfo, mig)
            attributes = g(nvml, nvml.nvmlDeviceGetAttributes, mig)
            out.append(
                MigInstance(
                    index=i,
                    uuid=_text(g(nvml, nvml.nvmlDeviceGetUUID, mig)),
                    gpu_instance_id=g(nvml, nvml.nvmlDeviceGetGpuInstanceId, mig),
                    compute_instance_id=g(nvml, nvml.nvmlDeviceGetComputeInstanceId, mig),
                    memory_used_mib=memory.used / MIB if memory is not None else None,
                    memory_total_mib=memory.total / MIB if memory is not None else None,
                    sm_count=attributes.multiprocessorCount if attributes is not None else None,
                )
            )
        return tuple(out)

    async def _attribute(self) -> None:
        if self.attribute is None:
            return
        for device in self._devices:
            if device.processes:
                device.processes = tuple(await self.attribute(list(device.processes)))
                sample = self._latest.get(device.index)
                if sample is not None:
                    self._latest[device.index] = replace(sample, processes=device.processes)

    def _set(self, status: HostStatus, message: str | None) -> None:
        self._status = status
        self._message = message
        self._changed.set()
        self._changed = asyncio.Event()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return values.text(str(value))
