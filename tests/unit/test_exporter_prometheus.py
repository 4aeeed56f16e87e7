"""The exporter against real Prometheus tools: `promtool check metrics` and a real
Prometheus on loopback joining a GPU series to a run through the info metric."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from seglab.telemetry.exporter import EnergyMeter, RunBook, RunMetrics, TelemetryCollector, serve
from seglab.telemetry.sample import GpuSample, HostState, HostStatus, ProcessSample

UUID = "GPU-0f1e2d3c-0000-1111-2222-333344445555"
RUN_ID = "seed.default.ab12"


def _state(now: float, power: float) -> HostState:
    """One host with one busy GPU, held by a run's container (the faked part: the GPU)."""
    process = ProcessSample(
        pid=4242,
        gpu_uuid=UUID,
        used_memory_mib=1024.0,
        process_name="python",
        container_id="c0ffee" * 10 + "abcd",
        container_name="seglab-seed",
        run_id=RUN_ID,
    )
    gpu = GpuSample(
        host="local",
        index=0,
        uuid=UUID,
        name="NVIDIA H100 80GB HBM3",
        utilization_gpu=87.0,
        memory_used_mib=1024.0,
        memory_total_mib=81559.0,
        temperature_c=61.0,
        power_draw_w=power,
        ecc_volatile_uncorrected=0,
        throttle_reasons=("sw_power_cap",),
        time=now,
        processes=(process,),
    )
    return HostState("local", "nvml", HostStatus.OK, gpus=(gpu,), updated=now)


@pytest.fixture
def exporter_url() -> Iterator[str]:
    """A served collector with the GPU above, its energy and one run."""
    now = time.time()
    energy = EnergyMeter()
    energy.add([_state(now - 10, 300.0)])
    state = _state(now, 500.0)
    energy.add([state])
    book = RunBook()
    book.update([RunMetrics(RUN_ID, "local", 0.5, 0.61, 12.5, 20)], now)
    server, thread = serve(TelemetryCollector(lambda: [state], book.runs, energy), 0, "127.0.0.1")
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def test_energy_is_integrated_and_joined_series_are_exported(exporter_url: str) -> None:
    families = {f.name: f for f in text_string_to_metric_families(_fetch(exporter_url))}
    (energy,) = families["seglab_gpu_energy_joules"].samples
    assert (energy.name, energy.labels["uuid"]) == ("seglab_gpu_energy_joules_total", UUID)
    assert energy.value == 4000.0  # 10 s between 300 W and 500 W
    (info,) = families["seglab_gpu_process_info"].samples
    assert info.labels == {"uuid": UUID, "run_id": RUN_ID, "container": "seglab-seed"}
    reasons = {s.labels["reason"]: s.value for s in families["seglab_gpu_throttle_reason"].samples}
    assert reasons["sw_power_cap"] == 1.0 and reasons["hw_slowdown"] == 0.0
    assert families["seglab_gpu_utilization_ratio"].samples[0].value == 0.87
    (miou,) = families["seglab_run_best_miou_ratio"].samples
    assert (miou.labels["run_id"], miou.value) == (RUN_ID, 0.61)


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)
def test_promtool_check_metrics_finds_nothing(exporter_url: str) -> None:
    check = subprocess.run(
        ["promtool", "check", "metrics"],
        check=False,
        input=_fetch(exporter_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus not installed (Debian package prometheus)",
)
def test_prometheus_joins_a_gpu_series_to_its_run(exporter_url: str, tmp_path: Path) -> None:
    target = urllib.parse.urlsplit(exporter_url).netloc
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: seglab\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = _free_port()
    server = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    query = "seglab_gpu_power_draw_watts * on(uuid) group_left(run_id) seglab_gpu_process_info"
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                result = json.loads(_fetch(url))["data"]["result"]
            except OSError:
                result = []
            if result:
                break
            assert time.monotonic() < deadline, "Prometheus never had the joined series"
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
    (series,) = result
    assert series["metric"]["run_id"] == RUN_ID
    assert series["metric"]["uuid"] == UUID
    assert float(series["value"][1]) == 500.0


def test_ended_runs_stay_an_hour_then_go() -> None:
    book = RunBook(retention=3600.0)
    running = RunMetrics("a", "local", 0.5, 0.6, 10.0, 5)
    book.update([running, RunMetrics("old", "local", 0.1, 0.9, None, 9, ended=True, age_s=7200)], 0)
    assert [run.run_id for run in book.runs()] == ["a"]  # ended long before: not exported
    book.update([RunMetrics("a", "local", 0.4, 0.7, None, 9, ended=True, age_s=60)], 100.0)
    (final,) = book.runs()
    assert (final.ended, final.best_miou) == (True, 0.7)
    book.update([], 3699.0)
    assert len(book.runs()) == 1
    book.update([], 3701.0)
    assert book.runs() == []


def test_nvml_total_energy_wins_over_the_integrated_one() -> None:
    now = time.time()
    meter = EnergyMeter()
    meter.add([_state(now - 10, 300.0), _state(now, 500.0)])
    state = _state(now, 500.0)
    gpu = replace(state.gpus[0], energy_mj=7_500_000.0)
    collector = TelemetryCollector(lambda: [replace(state, gpus=(gpu,))], None, meter)
    (family,) = [f for f in collector.collect() if f.name == "seglab_gpu_energy_joules"]
    assert [s.value for s in family.samples] == [7500.0]
