"""An NVML (pynvml) stand-in that replays a capture, for NvmlSource tests without a GPU.

:class:`ReplayNvml` has the pynvml functions NvmlSource calls and answers them from the
capture's query-gpu row, compute apps, and its ``-L`` / ``-q`` MIG sections. A value the
capture has as ``[N/A]`` raises ``NVML_ERROR_NOT_SUPPORTED`` as the real library does;
the constants and the ``NVMLError`` hierarchy are pynvml's own. Setting ``fail_with`` to
an NVML error code makes every later call raise it (driver unloaded, GPU lost).
"""

from __future__ import annotations

from collections import namedtuple

import pynvml

from seglab.telemetry import values
from seglab.telemetry.smi import parse_device_list, parse_query_mig
from tests.standin.nvidia_smi import Capture, bus_id, gpu_uuid

MIB = 1024 * 1024
Memory = namedtuple("Memory", "total used free")
Utilization = namedtuple("Utilization", "gpu memory")
Pci = namedtuple("Pci", "busId")
Proc = namedtuple("Proc", "pid usedGpuMemory")
Attributes = namedtuple("Attributes", "multiprocessorCount")
Handle = tuple[int, int]  # (GPU index, MIG device index or -1)


class ReplayNvml:
    """pynvml, answered from one capture phase for ``gpus`` identical GPUs."""

    NVMLError = pynvml.NVMLError

    def __init__(self, capture: Capture, phase: str = "load", gpus: int = 1) -> None:
        for name in dir(pynvml):
            if name.startswith("NVML_"):
                setattr(self, name, getattr(pynvml, name))
        names, _, rows = capture.table(phase, "query-gpu")
        self.row = dict(zip(names, rows[0], strict=True))
        app_names, _, app_rows = capture.table(phase, "query-compute-apps")
        self.apps = [dict(zip(app_names, row, strict=True)) for row in app_rows]
        (self.migs,) = parse_device_list(capture.section("capabilities", "list")).values()
        self.mig_details = next(
            iter(parse_query_mig(capture.section(phase, "query (-q)")).values()), []
        )
        self.capture = capture
        self.gpus = gpus
        self.fail_with: int | None = None
        self.inits = 0

    # -- helpers ---------------------------------------------------------------------------

    def _check(self) -> None:
        if self.fail_with is not None:
            raise pynvml.NVMLError(self.fail_with)

    def _value(self, field: str, scale: int = 1) -> int:
        self._check()
        number = values.number(self.row[field])
        if number is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return int(number * scale)

    # -- library and devices ---------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._check()
        self.inits += 1

    def nvmlShutdown(self) -> None:
        """Nothing to release."""

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        self._check()
        return (index, -1)

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        return self.row["driver_version"]

    def nvmlDeviceGetUUID(self, h: Handle) -> str:
        self._check()
        if h[1] >= 0:
            return str(self.migs[h[1]].uuid)
        return gpu_uuid(self.capture.path, h[0])

    def nvmlDeviceGetName(self, h: Handle) -> str:
        self._check()
        return self.row["name"]

    def nvmlDeviceGetPciInfo(self, h: Handle) -> Pci:
        self._check()
        return Pci(bus_id(h[0]).encode())

    def nvmlDeviceGetEnforcedPowerLimit(self, h: Handle) -> int:
        return self._value("enforced.power.limit", 1000)

    def nvmlDeviceGetMemoryInfo(self, h: Handle) -> Memory:
        self._check()
        if h[1] >= 0:
            mig = self.mig_details[h[1]]
            used, total = int(mig.memory_used_mib or 0) * MIB, int(mig.memory_total_mib or 0) * MIB
        else:
            total, used = self._value("memory.total", MIB), self._value("memory.used", MIB)
        return Memory(total, used, total - used)

    def nvmlDeviceGetMigMode(self, h: Handle) -> tuple[int, int]:
        mode = self.row["mig.mode.current"]
        self._check()
        if values.is_absent(mode):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return (1, 1) if mode == "Enabled" else (0, 0)

    def nvmlDeviceGetTotalEccErrors(self, h: Handle, kind: int, counter: int) -> int:
        return self._value("ecc.errors.uncorrected.volatile.total")

    # -- fast values -----------------------------------------------------------------------

    def nvmlDeviceGetUtilizationRates(self, h: Handle) -> Utilization:
        return Utilization(self._value("utilization.gpu"), self._value("utilization.memory"))

    def nvmlDeviceGetTemperature(self, h: Handle, sensor: int) -> int:
        return self._value("temperature.gpu")

    def nvmlDeviceGetPowerUsage(self, h: Handle) -> int:
        return self._value("power.draw", 1000)

    def nvmlDeviceGetFanSpeed(self, h: Handle) -> int:
        return self._value("fan.speed")

    def nvmlDeviceGetClockInfo(self, h: Handle, clock: int) -> int:
        sm = clock == pynvml.NVML_CLOCK_SM
        return self._value("clocks.current.sm" if sm else "clocks.current.memory")

    def nvmlDeviceGetPerformanceState(self, h: Handle) -> int:
        self._check()
        return int(self.row["pstate"].removeprefix("P"))

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Handle) -> int:
        self._check()
        return int(self.row["clocks_event_reasons.active"], 16)

    # -- processes and MIG -----------------------------------------------------------------

    def nvmlDeviceGetComputeRunningProcesses(self, h: Handle) -> list[Proc]:
        self._check()
        return [
            Proc(
                int(app["pid"]) + 100000 * h[0],
                int(values.number(app["used_gpu_memory"]) or 0) * MIB,
            )
            for app in self.apps
        ]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: Handle) -> list[Proc]:
        self._check()
        return []

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        self._check()
        return next(a["process_name"] for a in self.apps if int(a["pid"]) == pid % 100000)

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Handle) -> int:
        self._check()
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Handle, index: int) -> Handle:
        self._check()
        if index >= len(self.migs):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return (h[0], index)

    def nvmlDeviceGetGpuInstanceId(self, h: Handle) -> int | None:
        self._check()
        return self.mig_details[h[1]].gpu_instance_id

    def nvmlDeviceGetComputeInstanceId(self, h: Handle) -> int | None:
        self._check()
        return self.mig_details[h[1]].compute_instance_id

    def nvmlDeviceGetAttributes(self, h: Handle) -> Attributes:
        self._check()
        return Attributes(self.mig_details[h[1]].sm_count)
