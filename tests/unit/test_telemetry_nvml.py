"""NvmlSource over a replayed capture: values, MIG, slow fields, driver failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pynvml
import pytest

from seglab.telemetry.attribution import Attributor, local_reader
from seglab.telemetry.nvml import NvmlSource
from seglab.telemetry.sample import HostState, HostStatus
from tests.standin.nvidia_smi import FIXTURES, Capture
from tests.standin.nvml_replay import ReplayNvml

H100 = FIXTURES / "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt"
H100_MIG = FIXTURES / "linux-x86_64__nvidia-h100-mig__590.48.01.txt"


def _source(replay: ReplayNvml, **kwargs: Any) -> NvmlSource:
    options: dict[str, Any] = {"interval": 0.05, "apps_interval": 0.05, "backoff": (0.05, 0.1)}
    options.update(kwargs)
    return NvmlSource("local", nvml=cast(ModuleType, replay), **options)


async def _until(
    source: NvmlSource, check: Callable[[HostState], bool], timeout: float = 10.0
) -> HostState:
    async def wait() -> HostState:
        state = source.state()
        while not check(state):
            state = await source.next_change()
        return state

    return await asyncio.wait_for(wait(), timeout)


def _run(source: NvmlSource, body: Callable[[], Any]) -> Any:
    async def main() -> Any:
        task = asyncio.create_task(source.run())
        try:
            return await body()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return asyncio.run(main())


def test_nvml_readings_match_the_capture() -> None:
    replay = ReplayNvml(Capture(H100), "load", gpus=2)
    source = _source(replay)
    state: HostState = _run(source, lambda: source.wait_ready(10))
    assert state.status is HostStatus.OK
    assert state.driver_version == "590.48.01"
    assert len(state.gpus) == 2
    gpu = state.gpus[0]
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert (gpu.utilization_gpu, gpu.utilization_memory) == (100, 11)
    assert (gpu.memory_used_mib, gpu.memory_total_mib) == (19818, 81559)
    assert gpu.power_draw_w == 631.95
    assert gpu.power_limit_w == 700
    assert gpu.fan_percent is None  # [N/A] in the capture -> NOT_SUPPORTED -> None
    assert (gpu.temperature_c, gpu.clock_sm_mhz, gpu.clock_memory_mhz) == (59, 1980, 2619)
    assert (gpu.pstate, gpu.mig_mode, gpu.throttle_reasons) == ("P0", "Disabled", ())
    assert gpu.ecc_volatile_uncorrected == 0
    assert gpu.pci_bus_id == "00000000:10:00.0"
    assert [(p.pid, p.process_name, p.used_memory_mib) for p in gpu.processes] == [
        (11327, "/root/tools/memhog", 2566),
        (11328, "/root/tools/memhog", 1542),
        (11345, "./gpu_burn", 15690),
    ]
    assert state.gpus[1].uuid != gpu.uuid
    assert source.poll_cpu_seconds > 0


def test_mig_devices_under_their_parent() -> None:
    replay = ReplayNvml(Capture(H100_MIG), "load")
    source = _source(replay)
    state: HostState = _run(source, lambda: source.wait_ready(10))
    (gpu,) = state.gpus
    assert gpu.mig_mode == "Enabled"
    assert gpu.utilization_gpu is None  # whole-GPU utilisation is N/A in MIG mode
    got = [
        (m.index, m.gpu_instance_id, m.sm_count, m.memory_used_mib, m.memory_total_mib)
        for m in gpu.mig_instances
    ]
    assert got == [
        (0, 2, 60, 11091, 40448),
        (1, 3, 32, 17, 20096),
        (2, 9, 16, 9, 9984),
        (3, 10, 16, 9, 9984),
    ]
    assert all(m.uuid and m.uuid.startswith("MIG-") for m in gpu.mig_instances)


def test_slow_fields_are_read_less_often(monkeypatch: pytest.MonkeyPatch) -> None:
    replay = ReplayNvml(Capture(H100), "idle")
    calls = {"name": 0, "util": 0}
    name, util = replay.nvmlDeviceGetName, replay.nvmlDeviceGetUtilizationRates

    def counted_name(h: Any) -> str:
        calls["name"] += 1
        return name(h)

    def counted_util(h: Any) -> Any:
        calls["util"] += 1
        return util(h)

    monkeypatch.setattr(replay, "nvmlDeviceGetName", counted_name)
    monkeypatch.setattr(replay, "nvmlDeviceGetUtilizationRates", counted_util)
    source = _source(replay, slow_interval=60.0)
    _run(source, lambda: _until(source, lambda s: source.samples_total >= 5))
    assert calls["util"] >= 5
    assert calls["name"] == 1


def test_gpu_lost_degrades_and_recovers() -> None:
    replay = ReplayNvml(Capture(H100), "load")
    source = _source(replay)

    async def body() -> tuple[HostState, HostState]:
        await source.wait_ready(10)
        replay.fail_with = pynvml.NVML_ERROR_GPU_IS_LOST
        lost = await _until(source, lambda s: s.status is HostStatus.DEGRADED)
        replay.fail_with = None
        back = await _until(source, lambda s: s.status is HostStatus.OK)
        return lost, back

    lost, back = _run(source, body)
    assert "GPU is lost" in (lost.message or "")
    assert lost.gpus, "the last readings stay listed"
    assert back.gpus[0].power_draw_w == 631.95
    assert replay.inits >= 2  # NVML was initialised again after the failure


@pytest.mark.parametrize(
    ("code", "status", "text"),
    [
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, HostStatus.NO_GPU, "driver is not loaded"),
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, HostStatus.DEGRADED, "versions differ"),
    ],
)
def test_broken_driver_at_start_is_a_state(code: int, status: HostStatus, text: str) -> None:
    replay = ReplayNvml(Capture(H100), "idle")
    replay.fail_with = code
    source = _source(replay)
    state: HostState = _run(source, lambda: _until(source, lambda s: s.status is status))
    assert text in (state.message or "")
    assert state.gpus == ()


def test_processes_are_attributed(tmp_path: Path) -> None:
    cid = "ab" * 32
    (tmp_path / "11345").mkdir()
    (tmp_path / "11345" / "cgroup").write_text(f"0::/system.slice/docker-{cid}.scope\n")
    replay = ReplayNvml(Capture(H100), "load")
    source = _source(replay, attribute=Attributor(local_reader(tmp_path)))
    state: HostState = _run(
        source,
        lambda: _until(
            source, lambda s: bool(s.gpus and any(p.container_id for p in s.gpus[0].processes))
        ),
    )
    burn = next(p for p in state.gpus[0].processes if p.pid == 11345)
    assert burn.container_id == cid
