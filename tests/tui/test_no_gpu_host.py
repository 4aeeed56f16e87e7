"""A host without an NVIDIA GPU: CPU and RAM read at every tick, a header that says so."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from seglab.hosts import local_host
from seglab.telemetry.hostinfo import no_gpu_state
from seglab.telemetry.sample import HostState, HostStatus
from seglab.telemetry.source import Telemetry, probe_nvml
from seglab.tui.hosts_panel import render_hosts

NVML_PROBLEM = probe_nvml()


@pytest.mark.skipif(NVML_PROBLEM is None, reason="this machine has a working NVIDIA driver")
def test_no_gpu_host_reads_cpu_and_ram_at_every_tick(tmp_path: Path) -> None:
    host = local_host(nvidia_smi=str(tmp_path / "missing-nvidia-smi"))

    async def main() -> list[HostState]:
        telemetry = Telemetry()
        await telemetry.add_host(host)
        try:
            states = [telemetry.states()[0]]
            await asyncio.sleep(0.15)  # past the CPU meter's shortest window
            states.append(telemetry.states()[0])
            return states
        finally:
            await telemetry.close()

    first, second = asyncio.run(main())
    assert first.status is second.status is HostStatus.NO_GPU
    assert first.host_sample is not None and second.host_sample is not None
    assert second.host_sample is not first.host_sample  # a new reading, not the first one
    assert second.host_sample.cpu_percent is not None


def test_no_gpu_header_is_plain_words() -> None:
    state = no_gpu_state("cpubox", "NVML library libnvidia-ml.so.1 not found", time.time())
    header, reason = render_hosts([state], None, {}, None).plain.splitlines()
    assert header.startswith("cpubox  this machine · no NVIDIA GPU: CPU only · cpu ")
    assert "none" not in header and "no_gpu" not in header
    assert reason.strip().startswith("runs here use the CPU (cpubox:cpu) · no NVIDIA GPU (NVML")
