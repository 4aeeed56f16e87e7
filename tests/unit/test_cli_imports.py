"""What a CLI call imports: only what it uses (asyncssh and the Docker SDK cost a quarter
to half a second of start-up each). Run in a fresh interpreter, on an empty workstation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.standin import STANDIN

PROBE = """
import sys
from seglab.cli import main
status = main(sys.argv[1:])
print("MODULES", " ".join(sorted(m for m in sys.modules if "." not in m)))
raise SystemExit(status)
"""


def _run(tmp_path: Path, *args: str) -> tuple[str, set[str]]:
    env = dict(os.environ)
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        env[var] = str(tmp_path / var.lower())
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"  # local only, no engine
    env["PATH"] = f"{STANDIN.parent}{os.pathsep}{env['PATH']}"  # the replayed nvidia-smi
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, check=True
    ).stdout
    printed, _, modules = out.rpartition("MODULES ")
    return printed, set(modules.split())


@pytest.mark.parametrize("args", [("ps", "--json"), ("ps", "--all", "--json")])
def test_ps_on_a_local_only_workstation_imports_no_ssh_and_no_docker_sdk(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    printed, modules = _run(tmp_path, *args)
    assert json.loads(printed) == []
    assert "asyncssh" not in modules
    assert "docker" not in modules
    assert "textual" not in modules and "torch" not in modules


def test_gpus_on_a_local_only_workstation_imports_no_ssh_and_no_docker_sdk(
    tmp_path: Path,
) -> None:
    printed, modules = _run(tmp_path, "gpus", "--json")
    assert json.loads(printed)  # the stand-in's GPUs
    assert not {"asyncssh", "docker", "textual", "torch"} & modules


def test_version_is_answered_before_any_command_module_is_imported(tmp_path: Path) -> None:
    printed, modules = _run(tmp_path, "--version")
    assert printed.startswith("seglab ")
    assert not {"argparse", "pydantic", "yaml", "asyncssh", "docker"} & modules
