"""Helpers for the tests of the Prometheus exporter: one host's sample with a GPU held by a
run, the real collector serving it on loopback, a real Prometheus scraping it, and
`seglab exporter` in a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from seglab.multinode import free_local_port
from seglab.telemetry.exporter import EnergyMeter, RunBook, RunMetrics, TelemetryCollector, serve
from seglab.telemetry.sample import GpuSample, HostState, HostStatus, ProcessSample
from tests.serving import fetch, serving

UUID = "GPU-0f1e2d3c-0000-1111-2222-333344445555"
RUN_ID = "seed.default.ab12"

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus not installed (Debian package prometheus)",
)


def gpu_state(now: float, power: float) -> HostState:
    """Host ``local`` whose one GPU (every reading set, so every GPU family gets a series)
    is held by a run's container (the faked part: the GPU)."""
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
        utilization_memory=30.0,
        memory_used_mib=1024.0,
        memory_total_mib=81559.0,
        temperature_c=61.0,
        power_draw_w=power,
        power_limit_w=700.0,
        fan_percent=40.0,
        clock_sm_mhz=1980.0,
        clock_memory_mhz=2619.0,
        ecc_volatile_uncorrected=0,
        throttle_reasons=("sw_power_cap",),
        time=now,
        processes=(process,),
    )
    return HostState("local", "nvml", HostStatus.OK, gpus=(gpu,), updated=now)


@contextmanager
def served_collector() -> Iterator[str]:
    """The real collector served on loopback until the block ends, with the GPU above (10 s
    at 300 W, then 500 W, for its energy) and one run: its /metrics URL."""
    now = time.time()
    energy = EnergyMeter()
    energy.add([gpu_state(now - 10, 300.0)])
    state = gpu_state(now, 500.0)
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


def serving_exporter() -> AbstractContextManager[tuple[psutil.Process, str]]:
    """`seglab exporter` on a free loopback port until the block ends: its process and its
    /metrics URL (:func:`tests.serving.serving`)."""
    return serving(["exporter", "--port", "0"], "serving metrics on http://127.0.0.1:")


def prometheus_answers(
    exporter_url: str, tmp_path: Path, queries: Sequence[str], timeout: float = 90
) -> dict[str, list[dict[str, Any]]]:
    """Each query's instant result from a real Prometheus on loopback that scrapes
    ``exporter_url`` every second, once every query has data (rate() and increase() need
    two scrapes); fails the test on a query it rejects, if it exits, or after ``timeout`` s."""
    target = urllib.parse.urlsplit(exporter_url).netloc
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: seglab\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_local_port()
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
    api = f"http://127.0.0.1:{port}/api/v1/query?"
    answers: dict[str, list[dict[str, Any]]] = {}
    try:
        deadline = time.monotonic() + timeout
        pending = list(queries)
        while pending:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            for query in list(pending):
                try:
                    body = json.loads(fetch(api + urllib.parse.urlencode({"query": query})))
                except urllib.error.HTTPError as exc:  # a bad query is a 400 with the reason
                    pytest.fail(f"{query}: {exc.read().decode()}")
                except OSError:
                    break  # not listening yet
                assert body["status"] == "success", (query, body)
                if body["data"]["result"]:
                    answers[query] = body["data"]["result"]
                    pending.remove(query)
            assert time.monotonic() < deadline, f"no data for: {pending}"
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return answers
