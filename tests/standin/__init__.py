"""The stand-in `nvidia-smi` (see nvidia_smi.py) and helpers for tests that run it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

STANDIN = Path(__file__).resolve().parent / "nvidia-smi"


def use_standin(
    monkeypatch: pytest.MonkeyPatch,
    capture: str = "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt",
    gpus: int = 1,
    phase: str = "load",
) -> Path:
    """Configure the stand-in through the environment; returns the executable's path."""
    monkeypatch.setenv("SEGLAB_STANDIN_PYTHON", sys.executable)
    monkeypatch.setenv("SEGLAB_STANDIN_CAPTURE", capture)
    monkeypatch.setenv("SEGLAB_STANDIN_GPUS", str(gpus))
    monkeypatch.setenv("SEGLAB_STANDIN_PHASE", phase)
    return STANDIN
