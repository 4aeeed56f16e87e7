"""The stand-in nvidia-smi answers like the real tool, from the captures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.standin import use_standin
from tests.standin.nvidia_smi import FIXTURES, Capture

H100 = "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt"


def _run(exe: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    argv = [str(exe), *args]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)


def test_unknown_field_is_answered_like_the_real_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    exe = use_standin(monkeypatch)
    out = _run(exe, "--query-gpu=index,device_minor", "--format=csv")
    assert out.returncode == 2
    assert out.stdout == 'Field "device_minor" is not a valid field to query.\n\n'
    assert out.stderr == ""


def test_query_with_units_header_and_nounits(monkeypatch: pytest.MonkeyPatch) -> None:
    exe = use_standin(monkeypatch, gpus=3)
    fields = "index,uuid,gpu_name,utilization.gpu,memory.used,power.draw,fan.speed,count"
    out = _run(exe, f"--query-gpu={fields}", "--format=csv,nounits")
    assert out.returncode == 0
    header, *rows = out.stdout.splitlines()
    assert header == (
        "index, uuid, gpu_name, utilization.gpu [%], memory.used [MiB], power.draw [W], "
        "fan.speed [%], count"
    )
    assert len(rows) == 3
    cells = [row.split(", ") for row in rows]
    assert [c[0] for c in cells] == ["0", "1", "2"]
    assert len({c[1] for c in cells}) == 3  # distinct derived UUIDs
    assert cells[0][2:] == ["NVIDIA H100 80GB HBM3", "100", "19818", "631.95", "[N/A]", "3"]


def test_units_are_kept_without_nounits(monkeypatch: pytest.MonkeyPatch) -> None:
    exe = use_standin(monkeypatch, phase="idle")
    out = _run(exe, "--query-gpu=power.draw,memory.total", "--format=csv,noheader")
    assert out.stdout == "69.85 W, 81559 MiB\n"


def test_help_and_version_replay_the_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    exe = use_standin(monkeypatch)
    capture = Capture(FIXTURES / H100)
    help_out = _run(exe, "--help-query-gpu").stdout
    assert help_out.strip() == capture.section("capabilities", "help-query-gpu").strip()
    assert "NVML version        : 590.48" in _run(exe, "--version").stdout


def test_compute_apps_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    exe = use_standin(monkeypatch, gpus=2)
    out = _run(
        exe, "--query-compute-apps=gpu_uuid,pid,name,used_memory", "--format=csv,noheader,nounits"
    )
    rows = [row.split(", ") for row in out.stdout.splitlines()]
    assert len(rows) == 6
    assert rows[0][1:] == ["11327", "/root/tools/memhog", "2566"]
    assert len({r[0] for r in rows}) == 2
    assert len({r[1] for r in rows}) == 6  # pids differ between GPUs


def test_loop_repeats_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    exe = use_standin(monkeypatch, gpus=2)
    process = subprocess.Popen(
        [str(exe), "--query-gpu=index,timestamp", "--format=csv,noheader", "-lms", "100"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        lines = [process.stdout.readline() for _ in range(6)]
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert [line.split(",")[0] for line in lines] == ["0", "1"] * 3


def test_driver_down_answers_with_the_real_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    exe = use_standin(monkeypatch)
    down = tmp_path / "down"
    down.touch()
    monkeypatch.setenv("SEGLAB_STANDIN_DOWN_FILE", str(down))
    out = _run(exe, "--query-gpu=index", "--format=csv")
    assert out.returncode == 9
    assert "couldn't communicate with the NVIDIA driver" in out.stdout


def test_mig_capture_lists_mig_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    exe = use_standin(monkeypatch, capture="linux-x86_64__nvidia-h200-mig__590.48.01.txt", gpus=2)
    lines = _run(exe, "-L").stdout.splitlines()
    assert sum(line.startswith("GPU ") for line in lines) == 2
    assert sum("MIG " in line for line in lines) == 10
