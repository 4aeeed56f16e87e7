"""The Grafana dashboard `dashboards/seglab.json`: valid against Grafana's dashboard JSON
schema (vendored in tests/fixtures/grafana-schema), every metric it queries is one the
exporter emits, and a real Prometheus evaluates every query over a live scrape."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.exporterlib import RUN_ID, UUID, needs_prometheus, prometheus_answers, served_collector
from tests.serving import fetch

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the dev extra")

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "seglab.json"
SCHEMAS = REPO / "tests" / "fixtures" / "grafana-schema"
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


@pytest.fixture
def exporter_url() -> Iterator[str]:
    with served_collector() as url:
        yield url


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
        for family in text_string_to_metric_families(fetch(exporter_url))
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


def _with_variables(query: str) -> str:
    for name, value in VARIABLES.items():
        query = query.replace(name, value)
    return query


@needs_prometheus
def test_prometheus_answers_every_panel_query(exporter_url: str, tmp_path: Path) -> None:
    queries = [_with_variables(query) for query in _queries()]
    answers = prometheus_answers(exporter_url, tmp_path, queries)
    joined = [query for query in answers if "group_right" in query]
    (runs_table,) = joined
    (row,) = answers[runs_table]
    assert (row["metric"]["run_id"], row["metric"]["uuid"], float(row["value"][1])) == (
        RUN_ID,
        UUID,
        0.61,
    )
