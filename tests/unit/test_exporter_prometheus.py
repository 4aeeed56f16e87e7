"""The exporter against real Prometheus tools: `promtool check metrics` and a real
Prometheus on loopback joining a GPU series to a run through the info metric."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from seglab.telemetry.exporter import EnergyMeter, RunBook, RunMetrics, TelemetryCollector
from tests.exporterlib import (
    RUN_ID,
    UUID,
    gpu_state,
    needs_prometheus,
    prometheus_answers,
    served_collector,
)
from tests.serving import fetch


@pytest.fixture
def exporter_url() -> Iterator[str]:
    with served_collector() as url:
        yield url


def test_energy_is_integrated_and_joined_series_are_exported(exporter_url: str) -> None:
    families = {f.name: f for f in text_string_to_metric_families(fetch(exporter_url))}
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
        input=fetch(exporter_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")


@needs_prometheus
def test_prometheus_joins_a_gpu_series_to_its_run(exporter_url: str, tmp_path: Path) -> None:
    query = "seglab_gpu_power_draw_watts * on(uuid) group_left(run_id) seglab_gpu_process_info"
    (series,) = prometheus_answers(exporter_url, tmp_path, [query])[query]
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
    meter.add([gpu_state(now - 10, 300.0), gpu_state(now, 500.0)])
    state = gpu_state(now, 500.0)
    gpu = replace(state.gpus[0], energy_mj=7_500_000.0)
    collector = TelemetryCollector(lambda: [replace(state, gpus=(gpu,))], None, meter)
    (family,) = [f for f in collector.collect() if f.name == "seglab_gpu_energy_joules"]
    assert [s.value for s in family.samples] == [7500.0]
