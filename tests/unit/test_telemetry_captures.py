"""The nvidia-smi parsers over every real capture (idle and load, MIG ones included)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from seglab.telemetry import values
from seglab.telemetry.sample import GpuSample
from seglab.telemetry.smi import (
    WANTED,
    FieldPlan,
    SmiError,
    parse_compute_apps,
    parse_device_list,
    parse_gpu_row,
    parse_query_mig,
    supported_fields,
)
from tests.standin.nvidia_smi import FIXTURES, Capture

CAPTURES = sorted(p.name for p in FIXTURES.glob("*.txt"))

# (util %, mem util %, used MiB, total MiB, temp C, power W, limit W, fan %, sm MHz,
#  mem MHz, pstate, ecc, mig mode, throttle reasons) read off each capture's query-gpu row.
EXPECTED: dict[tuple[str, str], tuple[object, ...]] = {
    ("rtx-2080-super__595.71.05", "idle"): (
        0,
        9,
        214,
        8192,
        40,
        39.32,
        250,
        38,
        765,
        810,
        "P8",
        None,
        None,
        ("sw_power_cap",),
    ),
    ("rtx-2080-super__595.71.05", "load"): (
        8,
        3,
        819,
        8192,
        45,
        111.5,
        250,
        38,
        2055,
        7500,
        "P2",
        None,
        None,
        (),
    ),
    ("rtx-2080-super__610.57.04", "idle"): (
        0,
        0,
        211,
        8192,
        33,
        39.17,
        250,
        38,
        765,
        810,
        "P8",
        None,
        None,
        ("gpu_idle",),
    ),
    ("rtx-2080-super__610.57.04", "load"): (
        8,
        3,
        815,
        8192,
        38,
        98.14,
        250,
        38,
        2070,
        7500,
        "P2",
        None,
        None,
        (),
    ),
    ("rtx-4080-super__595.71.05", "idle"): (
        0,
        23,
        596,
        16376,
        43,
        26.2,
        320,
        0,
        210,
        405,
        "P8",
        None,
        None,
        ("gpu_idle",),
    ),
    ("rtx-4080-super__595.71.05", "load"): (
        7,
        2,
        1474,
        16376,
        46,
        84.24,
        320,
        0,
        2805,
        11251,
        "P2",
        None,
        None,
        (),
    ),
    ("h100-80gb-hbm3__590.48.01", "idle"): (
        0,
        0,
        0,
        81559,
        41,
        69.85,
        700,
        None,
        345,
        2619,
        "P0",
        0,
        "Disabled",
        ("gpu_idle",),
    ),
    ("h100-80gb-hbm3__590.48.01", "load"): (
        100,
        11,
        19818,
        81559,
        59,
        631.95,
        700,
        None,
        1980,
        2619,
        "P0",
        0,
        "Disabled",
        (),
    ),
    ("h100-mig__590.48.01", "idle"): (
        None,
        None,
        59,
        81559,
        42,
        71.15,
        700,
        None,
        345,
        2619,
        "P0",
        0,
        "Enabled",
        ("gpu_idle",),
    ),
    ("h100-mig__590.48.01", "load"): (
        None,
        None,
        11125,
        81559,
        53,
        433.78,
        700,
        None,
        1980,
        2619,
        "P0",
        0,
        "Enabled",
        (),
    ),
    ("h200-mig__590.48.01", "idle"): (
        None,
        None,
        55,
        143771,
        28,
        78.28,
        700,
        None,
        345,
        3201,
        "P0",
        0,
        "Enabled",
        ("gpu_idle",),
    ),
    ("h200-mig__590.48.01", "load"): (
        None,
        None,
        16959,
        143771,
        36,
        295.01,
        700,
        None,
        1980,
        3201,
        "P0",
        0,
        "Enabled",
        (),
    ),
    ("h200__590.48.01", "idle"): (
        0,
        0,
        0,
        143771,
        28,
        77.71,
        700,
        None,
        345,
        3201,
        "P0",
        0,
        "Disabled",
        ("gpu_idle",),
    ),
    ("h200__590.48.01", "load"): (
        100,
        7,
        32362,
        143771,
        52,
        627.4,
        700,
        None,
        1980,
        3201,
        "P0",
        0,
        "Disabled",
        (),
    ),
    ("l40s__595.80", "idle"): (
        100,
        9,
        0,
        46068,
        63,
        144.97,
        350,
        None,
        2520,
        9001,
        "P0",
        0,
        None,
        (),
    ),
    ("l40s__595.80", "load"): (
        9,
        2,
        1235,
        46068,
        54,
        110.23,
        350,
        None,
        2520,
        9001,
        "P0",
        0,
        None,
        (),
    ),
}
ATTRIBUTES = (
    "utilization_gpu",
    "utilization_memory",
    "memory_used_mib",
    "memory_total_mib",
    "temperature_c",
    "power_draw_w",
    "power_limit_w",
    "fan_percent",
    "clock_sm_mhz",
    "clock_memory_mhz",
    "pstate",
    "ecc_volatile_uncorrected",
    "mig_mode",
    "throttle_reasons",
)
# Load-phase processes: (pid, process name, MiB) per capture.
LOAD_APPS = {
    "h100-80gb-hbm3__590.48.01": [
        (11327, "/root/tools/memhog", 2566),
        (11328, "/root/tools/memhog", 1542),
        (11345, "./gpu_burn", 15690),
    ],
    "h100-mig__590.48.01": [
        (21180, "/root/tools/memhog", 2296),
        (21181, "/root/tools/memhog", 1272),
        (21198, "./gpu_burn", 7484),
    ],
    "rtx-4080-super__595.71.05": [
        (2165, "/usr/bin/kwin_wayland", 25),
        (5022, "ffmpeg", 503),
        (5021, "ffmpeg", 360),
    ],
    "l40s__595.80": [(20037, "ffmpeg", 538), (20038, "ffmpeg", 681)],
}


def _short(name: str) -> str:
    return name.split("__", 1)[1].removeprefix("nvidia-").removeprefix("geforce-")[:-4]


def _parse(capture: Capture, phase: str) -> tuple[GpuSample, list[str], list[str], FieldPlan]:
    """Parse the capture's query-gpu row with the production field plan and row parser."""
    names, _units, rows = capture.table(phase, "query-gpu")
    plan = FieldPlan.choose(supported_fields(capture.section("capabilities", "help-query-gpu")))
    column = {name: i for i, name in enumerate(names)}
    cells = [rows[0][column[field]] for field in plan.fields]
    parsed = parse_gpu_row(plan, cells, host="lab", now=1.0)
    return parsed.sample, cells, names, plan


@pytest.mark.parametrize("phase", ["idle", "load"])
@pytest.mark.parametrize("name", CAPTURES)
def test_query_gpu_row_parses_to_the_captured_values(name: str, phase: str) -> None:
    sample, _, _, _ = _parse(Capture(FIXTURES / name), phase)
    expected = EXPECTED[(_short(name), phase)]
    got = tuple(getattr(sample, attribute) for attribute in ATTRIBUTES)
    assert got == expected
    assert sample.index == 0
    assert sample.host == "lab"
    assert sample.uuid == "GPU-00000000-0000-0000-0000-000000000000"
    assert sample.name is not None and sample.name.startswith("NVIDIA ")


def test_h100_load_capture_matches_the_issue_example() -> None:
    capture = Capture(FIXTURES / "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt")
    sample, _, _, _ = _parse(capture, "load")
    assert sample.utilization_gpu == 100
    assert sample.memory_used_mib == 19818
    assert sample.power_draw_w == 631.95
    assert sample.fan_percent is None
    assert sample.pci_bus_id == "00000000:00:09.0"
    assert sample.memory_fraction == pytest.approx(19818 / 81559)


@pytest.mark.parametrize("phase", ["idle", "load"])
@pytest.mark.parametrize("name", CAPTURES)
def test_no_absent_value_token_ever_becomes_a_number(name: str, phase: str) -> None:
    capture = Capture(FIXTURES / name)
    sample, cells, _, plan = _parse(capture, phase)
    absent_seen = 0
    for attribute, cell in zip(plan.attributes, cells, strict=True):
        if attribute in ("count", "driver_version", "throttle_mask"):
            continue
        if values.is_absent(cell):
            absent_seen += 1
            assert getattr(sample, attribute) is None, (attribute, cell)
        else:
            assert getattr(sample, attribute) is not None, (attribute, cell)
    # Every column of the full capture row: an absent token never reads as a number.
    _, _, rows = capture.table(phase, "query-gpu")
    tokens = [cell for cell in rows[0] if values.is_absent(cell)]
    assert tokens, "each capture has [N/A]-style cells"
    for cell in tokens:
        assert values.number(cell) is None
        assert values.integer(cell) is None
        assert values.text(cell) is None
    if "h100" in name or "h200" in name or "l40s" in name:
        assert absent_seen >= 1  # fan.speed is [N/A] on these passively cooled boards


@pytest.mark.parametrize("name", CAPTURES)
def test_field_plan_covers_what_the_dashboard_needs(name: str) -> None:
    capture = Capture(FIXTURES / name)
    plan = FieldPlan.choose(supported_fields(capture.section("capabilities", "help-query-gpu")))
    assert len(plan.attributes) == len(WANTED)
    assert plan.fields[:3] == ("index", "uuid", "count")
    assert "power.draw" in plan.fields
    # Newer drivers renamed throttle reasons to clocks-event reasons.
    assert "clocks_event_reasons.active" in plan.fields


def test_field_plan_falls_back_to_older_names() -> None:
    plan = FieldPlan.choose(["index", "gpu_uuid", "clocks_throttle_reasons.active", "clocks.sm"])
    assert plan.fields == ("index", "gpu_uuid", "clocks.sm", "clocks_throttle_reasons.active")
    assert plan.attributes == ("index", "uuid", "clock_sm_mhz", "throttle_mask")


def test_field_plan_without_uuid_is_an_error() -> None:
    with pytest.raises(SmiError, match="cannot report uuid"):
        FieldPlan.choose(["index", "name"])


@pytest.mark.parametrize("name", CAPTURES)
def test_compute_apps_of_every_capture(name: str) -> None:
    capture = Capture(FIXTURES / name)
    for phase in ("idle", "load"):
        names, _, rows = capture.table(phase, "query-compute-apps")
        text = capture.section(phase, "query-compute-apps")
        processes = parse_compute_apps(text, names)
        assert len(processes) == len(rows)
        for process, row in zip(processes, rows, strict=True):
            assert process.pid == int(row[names.index("pid")])
            assert process.gpu_uuid == "GPU-00000000-0000-0000-0000-000000000000"
            assert process.used_memory_mib is not None and process.used_memory_mib > 0
    expected = LOAD_APPS.get(_short(name))
    if expected is not None:
        names, _, _ = capture.table("load", "query-compute-apps")
        found = parse_compute_apps(capture.section("load", "query-compute-apps"), names)
        assert [(p.pid, p.process_name, p.used_memory_mib) for p in found] == expected


@pytest.mark.parametrize(
    ("name", "profiles"),
    [
        (
            "linux-x86_64__nvidia-h100-mig__590.48.01.txt",
            ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"],
        ),
        (
            "linux-x86_64__nvidia-h200-mig__590.48.01.txt",
            ["1c.3g.71gb", "2c.3g.71gb", "2g.35gb", "1g.18gb", "1g.18gb"],
        ),
    ],
)
def test_mig_devices_are_listed_under_their_parent(name: str, profiles: list[str]) -> None:
    capture = Capture(FIXTURES / name)
    listing = parse_device_list(capture.section("capabilities", "list"))
    assert list(listing) == ["GPU-00000000-0000-0000-0000-000000000000"]
    migs = listing["GPU-00000000-0000-0000-0000-000000000000"]
    assert [m.profile for m in migs] == profiles
    assert [m.index for m in migs] == list(range(len(profiles)))
    assert all(m.uuid and m.uuid.startswith("MIG-") for m in migs)
    for phase in ("idle", "load"):
        by_bus = parse_query_mig(capture.section(phase, "query (-q)"))
        assert len(by_bus) == 1
        (instances,) = by_bus.values()
        assert [m.index for m in instances] == list(range(len(profiles)))
        assert all(m.memory_total_mib and m.memory_used_mib is not None for m in instances)


def test_h100_mig_load_memory_per_instance() -> None:
    capture = Capture(FIXTURES / "linux-x86_64__nvidia-h100-mig__590.48.01.txt")
    (instances,) = parse_query_mig(capture.section("load", "query (-q)")).values()
    got = [
        (
            m.gpu_instance_id,
            m.compute_instance_id,
            m.sm_count,
            m.memory_used_mib,
            m.memory_total_mib,
        )
        for m in instances
    ]
    assert got == [
        (2, 0, 60, 11091, 40448),
        (3, 0, 32, 17, 20096),
        (9, 0, 16, 9, 9984),
        (10, 0, 16, 9, 9984),
    ]


@pytest.mark.parametrize("name", [c for c in CAPTURES if "mig" not in c])
def test_non_mig_captures_have_no_mig_devices(name: str) -> None:
    capture = Capture(FIXTURES / name)
    assert parse_query_mig(capture.section("load", "query (-q)")) == {}
    listing = parse_device_list(capture.section("capabilities", "list"))
    assert all(migs == [] for migs in listing.values())


def test_sample_json_keeps_missing_values_null() -> None:
    capture = Capture(FIXTURES / "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt")
    sample, _, _, _ = _parse(capture, "load")
    data = sample.to_dict()
    assert data["fan_percent"] is None
    assert data["power_draw_w"] == 631.95
    assert data["throttle_reasons"] == []
    assert not any(isinstance(v, float) and math.isnan(v) for v in data.values())


def test_capture_paths_are_the_shared_fixture(smi_captures: Path) -> None:
    assert smi_captures.resolve() == FIXTURES.resolve()
    assert len(CAPTURES) == 8
