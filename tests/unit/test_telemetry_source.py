"""Choosing the source per host config; NVML's missing-driver path on this machine."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from seglab.hosts import Host, SSHTarget, local_host
from seglab.telemetry.hostinfo import local_host_sample
from seglab.telemetry.nvml import NvmlSource
from seglab.telemetry.sample import HostState, HostStatus
from seglab.telemetry.smi import SmiSource
from seglab.telemetry.source import (
    FixedSource,
    Telemetry,
    TelemetrySource,
    make_source,
    probe_nvml,
)
from tests.standin import use_standin

NVML_PROBLEM = probe_nvml()
needs_no_driver = pytest.mark.skipif(
    NVML_PROBLEM is None, reason="this machine has a working NVIDIA driver"
)


@needs_no_driver
def test_probe_explains_the_missing_driver() -> None:
    assert NVML_PROBLEM is not None
    assert NVML_PROBLEM.no_gpu
    assert "libnvidia-ml.so.1 not found" in str(NVML_PROBLEM) or "not loaded" in str(NVML_PROBLEM)


@needs_no_driver
def test_auto_without_gpu_reports_no_gpu_with_cpu_and_ram(tmp_path: Path) -> None:
    host = local_host(nvidia_smi=str(tmp_path / "missing-nvidia-smi"))

    async def main() -> tuple[TelemetrySource, list[HostState]]:
        telemetry = Telemetry()
        source = await telemetry.add_host(host)
        try:
            return source, await telemetry.wait_ready(5)
        finally:
            await telemetry.close()

    source, (state,) = asyncio.run(main())
    assert isinstance(source, FixedSource)
    assert state.status is HostStatus.NO_GPU
    assert (state.message or "").startswith("no NVIDIA GPU (")
    sample = state.host_sample
    assert sample is not None and sample.memory_used_mib and sample.memory_total_mib
    assert sample.cpu_count == os.cpu_count()
    assert 0 < sample.memory_used_mib < sample.memory_total_mib
    assert state.to_dict()["gpus"] == []


@needs_no_driver
def test_auto_falls_back_to_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    exe = use_standin(monkeypatch)
    source = asyncio.run(make_source(local_host(nvidia_smi=str(exe))))
    assert isinstance(source, SmiSource)
    assert source.missing_means_no_gpu


@needs_no_driver
def test_explicit_nvml_without_driver_is_a_state_not_a_crash() -> None:
    async def main() -> HostState:
        source = await make_source(local_host(telemetry="nvml"))
        assert isinstance(source, NvmlSource)
        task = asyncio.create_task(source.run())
        state = await source.wait_ready(10)
        await asyncio.wait_for(task, 5)  # a host without a driver stops polling
        return state

    state = asyncio.run(main())
    assert state.status is HostStatus.NO_GPU
    assert "NVML library libnvidia-ml.so.1 not found" in (state.message or "")


def test_explicit_nvidia_smi_is_used_as_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    exe = use_standin(monkeypatch)
    host = local_host(telemetry="nvidia-smi", nvidia_smi=str(exe), telemetry_interval=2.5)
    source = asyncio.run(make_source(host))
    assert isinstance(source, SmiSource)
    assert (source.nvidia_smi, source.interval) == (str(exe), 2.5)
    assert not source.missing_means_no_gpu


def test_remote_host_without_a_connection_says_so() -> None:
    host = Host(name="lab1", ssh=SSHTarget(user="alice", hostname="gpu1.example.org"))
    source = asyncio.run(make_source(host))
    state = source.state()
    assert state.status is HostStatus.ERROR
    assert "no connection" in (state.message or "")


@pytest.mark.gpu
def test_nvml_reads_the_real_gpus() -> None:
    if NVML_PROBLEM is not None:
        pytest.skip(f"no NVIDIA GPU here: {NVML_PROBLEM}")

    async def main() -> HostState:
        source = NvmlSource(interval=0.2)
        task = asyncio.create_task(source.run())
        try:
            return await source.wait_ready(20)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    state = asyncio.run(main())
    assert state.status is HostStatus.OK
    gpu = state.gpus[0]
    assert gpu.uuid.startswith("GPU-") and (gpu.memory_total_mib or 0) > 0


def test_host_sample_measures_cpu_over_a_real_window() -> None:
    local_host_sample()
    time.sleep(0.15)
    sample = local_host_sample()
    assert sample.cpu_percent is not None and 0.0 <= sample.cpu_percent <= 100.0
    assert sample.load_1m is not None and sample.load_1m >= 0.0
    assert sample.memory_total_mib and sample.memory_total_mib > 100
