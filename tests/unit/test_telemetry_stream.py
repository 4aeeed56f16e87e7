"""The nvidia-smi stream source against the stand-in: values, death, recovery, bad lines."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from seglab.machines import LocalMachine
from seglab.telemetry.history import HistoryStore
from seglab.telemetry.sample import HostState, HostStatus
from seglab.telemetry.smi import SmiSource
from tests.standin import STANDIN, use_standin


async def _until(
    source: SmiSource, check: Callable[[HostState], bool], timeout: float = 20.0
) -> HostState:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    state = source.state()
    while not check(state):
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"state never matched; last: {state}")
        try:
            state = await asyncio.wait_for(source.next_change(), left)
        except asyncio.TimeoutError:
            state = source.state()
    return state


def _source(exe: Path | str, **kwargs: object) -> SmiSource:
    options: dict[str, object] = {
        "nvidia_smi": str(exe),
        "interval": 0.2,
        "apps_interval": 0.5,
        "backoff": (0.2, 0.4),
    }
    options.update(kwargs)
    return SmiSource("lab", LocalMachine(), **options)  # type: ignore[arg-type]


def test_stream_reads_the_capture_values(monkeypatch: pytest.MonkeyPatch) -> None:
    exe = use_standin(monkeypatch, gpus=2)
    history = HistoryStore()

    async def main() -> HostState:
        source = _source(exe, on_sample=history.push)
        task = asyncio.create_task(source.run())
        try:
            await source.wait_ready(20)
            return await _until(source, lambda s: source.samples_total >= 6)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    state = asyncio.run(main())
    assert state.status is HostStatus.OK
    assert state.driver_version == "590.48.01"
    assert [g.index for g in state.gpus] == [0, 1]
    gpu = state.gpus[0]
    assert (gpu.utilization_gpu, gpu.memory_used_mib, gpu.power_draw_w, gpu.fan_percent) == (
        100,
        19818,
        631.95,
        None,
    )
    assert [p.pid for p in gpu.processes] == [11327, 11328, 11345]
    assert [p.pid for p in state.gpus[1].processes] == [111327, 111328, 111345]
    series = history.get("lab", gpu.uuid)
    assert series is not None and series.size >= 3
    assert set(series.values("power_draw_w")) == {631.95}
    assert set(series.values("utilization_memory")) == {11.0}


def test_killed_stream_degrades_then_recovers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_standin(monkeypatch)
    down = tmp_path / "driver-down"
    monkeypatch.setenv("SEGLAB_STANDIN_DOWN_FILE", str(down))
    calls = tmp_path / "calls.log"
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f'#!/bin/sh\necho "$1" >> "{calls}"\nexec "{STANDIN}" "$@"\n')
    exe.chmod(0o755)

    async def main() -> list[HostState]:
        source = _source(exe)
        task = asyncio.create_task(source.run())
        seen = []
        try:
            seen.append(await source.wait_ready(20))
            first_pid = source.stream_pid
            assert first_pid is not None
            down.touch()  # the driver "goes away" and the stream is killed mid-flight
            os.kill(first_pid, signal.SIGKILL)
            seen.append(await _until(source, lambda s: s.status is HostStatus.DEGRADED))
            seen.append(await _until(source, lambda s: "NVIDIA driver" in (s.message or "")))
            down.unlink()
            seen.append(await _until(source, lambda s: s.status is HostStatus.OK))
            assert source.stream_pid not in (None, first_pid)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return seen

    ready, killed, driver_down, recovered = asyncio.run(main())
    assert ready.status is HostStatus.OK
    assert killed.message is not None
    assert "killed by signal 9" in killed.message and "retrying in" in killed.message
    assert driver_down.status is HostStatus.DEGRADED
    assert "couldn't communicate with the NVIDIA driver" in (driver_down.message or "")
    assert "exit 9" in (driver_down.message or "")
    assert driver_down.gpus, "the last readings stay listed while degraded"
    assert recovered.message is None
    assert recovered.restarts >= 2
    assert recovered.gpus[0].power_draw_w == 631.95
    # Attempts that delivered nothing make the source ask the driver for its fields again.
    assert calls.read_text().splitlines().count("--help-query-gpu") >= 2


def test_partial_lines_are_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_standin(monkeypatch)
    wrapper = tmp_path / "nvidia-smi"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$1" in --query-gpu=*) printf "0, GPU-cut-off\\n";; esac\n'
        f'exec "{STANDIN}" "$@"\n'
    )
    wrapper.chmod(0o755)

    async def main() -> tuple[HostState, int]:
        source = _source(wrapper)
        task = asyncio.create_task(source.run())
        try:
            state = await source.wait_ready(20)
            return state, source.partial_lines
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    state, partial = asyncio.run(main())
    assert state.status is HostStatus.OK
    assert partial == 1
    assert state.gpus[0].memory_used_mib == 19818


def test_a_silent_stream_is_restarted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_standin(monkeypatch)
    wrapper = tmp_path / "nvidia-smi"
    wrapper.write_text(
        f'#!/bin/sh\ncase "$1" in --query-gpu=*) exec sleep 60;; esac\nexec "{STANDIN}" "$@"\n'
    )
    wrapper.chmod(0o755)

    async def main() -> HostState:
        source = _source(wrapper, stall_after=0.5)
        task = asyncio.create_task(source.run())
        try:
            return await _until(source, lambda s: s.status is HostStatus.DEGRADED)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    state = asyncio.run(main())
    assert "nvidia-smi sent nothing for 0.5 s" in (state.message or "")


@pytest.mark.parametrize("auto", [True, False])
def test_missing_nvidia_smi(tmp_path: Path, auto: bool) -> None:
    missing = tmp_path / "no-such-nvidia-smi"

    async def main() -> HostState:
        source = _source(missing, missing_means_no_gpu=auto)
        task = asyncio.create_task(source.run())
        try:
            return await source.wait_ready(20)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    state = asyncio.run(main())
    if auto:
        assert state.status is HostStatus.NO_GPU
        assert (state.message or "").startswith("no NVIDIA GPU (cannot start")
    else:
        assert state.status is HostStatus.DEGRADED
        assert f"cannot start {missing}" in (state.message or "")
