"""The Grafana dashboard `dashboards/seglab.json`: valid against Grafana's dashboard JSON
schema (vendored in tests/fixtures/grafana-schema), every metric it queries is one the
exporter emits, and a real Prometheus evaluates every query over a live scrape."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from seglab.telemetry.exporter import EnergyMeter, RunBook, RunMetrics, TelemetryCollector, serve
from seglab.telemetry.sample import GpuSample, HostState, HostStatus, ProcessSample

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the dev extra")

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "seglab.json"
SCHEMAS = REPO / "tests" / "fixtures" / "grafana-schema"
UUID = "GPU-0f1e2d3c-0000-1111-2222-333344445555"
RUN_ID = "seed.default.ab12"
METRIC = re.compile(r"\bseglab_[a-z0-9_]+")
# Grafana's variables as a dashboard viewer would have them: every host, 1 min steps.
VARIABLES = {"$host": ".*", "$__rate_interval": "1m", "$__range": "5m"}


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _schema(name: str, definition: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}.jsonschema.json").read_text())
    if definition is not None:
        schema = {**schema, "$ref": f"#/definitions/{definition}"}
    return schema


def _queries() -> list[str]:
    return [target["expr"] for panel in _dashboard()["panels"] for target in panel["targets"]]


def _state(now: float, power: float) -> HostState:
    """A host whose one GPU is held by a run (every GPU family gets a series)."""
    process = ProcessSample(
        pid=4242,
        gpu_uuid=UUID,
        used_memory_mib=1024.0,
        process_name="python",
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


@pytest.fixture
def exporter_url() -> Iterator[str]:
    """The real collector served on loopback with the GPU above and one run."""
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


def test_dashboard_is_valid_against_grafanas_schema() -> None:
    dashboard = _dashboard()
    jsonschema.validate(dashboard, _schema("dashboard"))
    query = _schema("prometheus")
    for panel in dashboard["panels"]:
        kind = panel["type"]
        jsonschema.validate(panel["options"], _schema(kind, "Options"))
        custom = panel["fieldConfig"]["defaults"].get("custom")
        if custom is not None:
            jsonschema.validate(custom, _schema(kind, "FieldConfig"))
        for target in panel["targets"]:
            jsonschema.validate(target, query)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids), "panel ids are unique"


def test_schema_check_catches_a_misspelt_field() -> None:
    broken = _dashboard()
    panel = broken["panels"][0]
    panel["gridpos"] = panel.pop("gridPos")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _schema("dashboard"))
    with pytest.raises(jsonschema.ValidationError, match="'gridpos' was unexpected"):
        jsonschema.validate(panel, _schema("dashboard", "Panel"))


def test_every_queried_metric_is_one_the_exporter_emits(exporter_url: str) -> None:
    emitted = {
        sample.name
        for family in text_string_to_metric_families(_fetch(exporter_url))
        for sample in family.samples
    }
    variable = _dashboard()["templating"]["list"][1]["definition"]
    used = {name for text in [*_queries(), variable] for name in METRIC.findall(text)}
    assert all(METRIC.search(query) for query in _queries())
    assert used - emitted == set()
    assert {
        "seglab_gpu_utilization_ratio",
        "seglab_gpu_memory_used_bytes",
        "seglab_gpu_power_draw_watts",
        "seglab_gpu_temperature_celsius",
        "seglab_gpu_energy_joules_total",
        "seglab_gpu_throttle_reason",
        "seglab_gpu_process_info",
        "seglab_run_best_miou_ratio",
        "seglab_run_loss",
    } <= used


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _with_variables(query: str) -> str:
    for name, value in VARIABLES.items():
        query = query.replace(name, value)
    return query


@pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus not installed (Debian package prometheus)",
)
def test_prometheus_answers_every_panel_query(exporter_url: str, tmp_path: Path) -> None:
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
    api = f"http://127.0.0.1:{port}/api/v1/query?"
    answers: dict[str, list[dict[str, Any]]] = {}
    try:
        deadline = time.monotonic() + 90
        pending = [_with_variables(query) for query in _queries()]
        while pending:  # rate() and increase() need two scrapes in their window
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            for query in list(pending):
                try:
                    body = json.loads(_fetch(api + urllib.parse.urlencode({"query": query})))
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
    joined = [query for query in answers if "group_right" in query]
    (runs_table,) = joined
    (row,) = answers[runs_table]
    assert (row["metric"]["run_id"], row["metric"]["uuid"], float(row["value"][1])) == (
        RUN_ID,
        UUID,
        0.61,
    )
