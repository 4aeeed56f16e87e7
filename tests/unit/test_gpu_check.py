"""`benchmarks/gpu_check.sh --dry-run`: every step that needs no CUDA runs, the GPU steps
are listed with what they would measure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the GPU check needs the train extra (torch)")

pytestmark = [pytest.mark.train, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
GPU_STEPS = [
    "driver",
    "nvml",
    "captures",
    "bench-train",
    "bench-train-compile",
    "amp-bf16",
    "amp-fp16",
    "export",
    "nccl",
]


def test_dry_run_runs_the_cpu_steps_and_lists_the_gpu_steps(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert f"GPU steps a GPU machine runs: {' '.join(GPU_STEPS)}" in out
    for name in GPU_STEPS:
        assert f"==> {name} [GPU step, not run: --dry-run]" in out
    for name in ("versions", "nvml-standin", "captures-standin", "nccl-gloo", "data"):
        assert (tmp_path / f"{name}.log").stat().st_size > 0, name
    assert "ratio seglab / reference" in (tmp_path / "data.log").read_text()
    (capture,) = (tmp_path / "captures-standin").glob("linux-*__nvidia-h200__*.txt")
    assert "# load :: query-gpu (csv, what the exporter parses)" in capture.read_text()


def test_an_unknown_argument_is_refused() -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--fast"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "unknown argument --fast" in proc.stderr
