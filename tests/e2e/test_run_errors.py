"""Bad placements and broken hosts: one specific message each, nothing left half-created."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from seglab.scheduler import PlacementError, Pool, parse_on
from tests.e2e.runlib import RECIPES, ps, seglab
from tests.standin import use_standin


def _hosts(text: str) -> Path:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "seglab" / "hosts.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _runs_root() -> Path:
    return Path(os.environ["XDG_DATA_HOME"]) / "seglab" / "runs"


def _nothing_left() -> None:
    """No run row and no run dir; the host queue's own folder (its booking lock, taken by
    every launch on the host) may stay."""
    from seglab.hostqueue.store import DIR

    assert ps() == []
    root = _runs_root()
    assert not root.exists() or [p.name for p in root.iterdir() if p.name != DIR] == []


def _fails(*args: str) -> str:
    out = seglab("run", *args, check=False)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    return out.stderr.strip()


@pytest.mark.parametrize(
    ("text", "pools"),
    [
        ("auto", [Pool(None)]),
        ("local:cpu", [Pool("local", cpu=True)]),
        ("lab1:0,1", [Pool("lab1", gpus=("0", "1"))]),
        ("lab1:0-3,lab2:1", [Pool("lab1", gpus=("0", "1", "2", "3")), Pool("lab2", gpus=("1",))]),
        ("lab1,lab2:GPU-abc", [Pool("lab1"), Pool("lab2", gpus=("GPU-abc",))]),
    ],
)
def test_parse_on(text: str, pools: list[Pool]) -> None:
    assert parse_on(text) == pools


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lab1:", "nothing after"),
        (":0", "lacks a host"),
        ("lab1:3-1", "runs backwards"),
        ("lab1:cpu,2", "GPUs listed after"),
        ("lab1:0,,1", "empty item"),
    ],
)
def test_parse_on_errors(text: str, message: str) -> None:
    with pytest.raises(PlacementError, match=message):
        parse_on(text)


def test_unknown_host() -> None:
    message = _fails(str(RECIPES / "tiny.yaml"), "--on", "lcoal:cpu")
    assert "lcoal" in message and "did you mean 'local'" in message
    _nothing_left()


def test_unknown_gpu_and_too_many_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    standin = use_standin(monkeypatch, gpus=2, phase="idle")
    _hosts(f"hosts:\n  local:\n    telemetry: nvidia-smi\n    nvidia_smi: {standin}\n")
    message = _fails(str(RECIPES / "tiny.yaml"), "--on", "local:5", "--runtime", "process")
    assert "local has no GPU '5'; its GPUs: 0 (GPU-" in message and "1 (GPU-" in message
    message = _fails(str(RECIPES / "tiny-ddp.yaml"), "--on", "local:0", "--runtime", "process")
    assert "needs 2 GPUs per run" in message and "has 1" in message
    _nothing_left()


def test_no_gpu_anywhere_says_so() -> None:
    message = _fails(str(RECIPES / "tiny.yaml"), "--on", "auto", "--runtime", "process")
    assert "no GPU to place on" in message and "--on HOST:cpu" in message


def test_missing_dataset_root(tmp_path: Path) -> None:
    recipe = tmp_path / "cs.yaml"
    recipe.write_text(
        f"extends: {RECIPES / 'tiny.yaml'}\nname: cs\n"
        "data: {dataset: cityscapes, synthetic: null}\n"
    )
    message = _fails(str(recipe), "--on", "local:cpu", "--runtime", "process")
    assert "local" in message and "cityscapes" in message and "datasets" in message
    _nothing_left()
    _hosts(f"hosts:\n  local:\n    datasets: {{cityscapes: {tmp_path / 'nowhere'}}}\n")
    message = _fails(str(recipe), "--on", "local:cpu", "--runtime", "process")
    assert f"dataset root {tmp_path / 'nowhere'} (cityscapes) does not exist on local" in message
    _nothing_left()


def test_no_docker_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")
    message = _fails(str(RECIPES / "tiny.yaml"), "--on", "local:cpu", "--runtime", "docker")
    assert "no Docker engine answers" in message and "--runtime process" in message
    _nothing_left()


@pytest.mark.docker
def test_missing_image(docker_client: Any) -> None:
    message = _fails(
        str(RECIPES / "tiny.yaml"),
        "--on",
        "local:cpu",
        "--runtime",
        "docker",
        "--image",
        "seglab/no-such-image:0",
    )
    assert "image seglab/no-such-image:0 is not on host local" in message
    _nothing_left()


@pytest.mark.docker
def test_gpus_on_an_engine_without_the_nvidia_runtime(
    ci_image: str, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    standin = use_standin(monkeypatch, gpus=1, phase="idle")
    _hosts(f"hosts:\n  local:\n    telemetry: nvidia-smi\n    nvidia_smi: {standin}\n")
    message = _fails(str(RECIPES / "tiny.yaml"), "--on", "local:0", "--runtime", "docker")
    assert "cannot give GPUs to containers" in message
    assert "nvidia-container-toolkit" in message
    _nothing_left()
    ours = [
        c
        for c in docker_client.containers.list(all=True, filters={"label": "seglab.run_id"})
        if c.labels.get("seglab.run_dir", "").startswith(str(_runs_root()))
    ]
    assert ours == []
    # The reservation was released: a CPU run still works and nothing holds GPU 0.
    from seglab.registry import Registry

    assert Registry().holders() == {}


@pytest.mark.system
def test_full_disk_in_the_runs_root(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        _hosts(f"hosts:\n  local:\n    runs_root: {small}\n")
        message = _fails(str(RECIPES / "tiny.yaml"), "--on", "local:cpu", "--runtime", "process")
        assert f"runs root {small} on local has only 1 MiB free" in message
        assert ps() == [] and list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)
