"""What a CLI call imports: only what it uses (asyncssh and the Docker SDK cost a quarter
to half a second of start-up each). Run in a fresh interpreter, on an empty workstation;
the assertions are on the set of modules loaded, not on timings."""

from __future__ import annotations

import argparse
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
print("MODULES", " ".join(sorted(sys.modules)))
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
    # No run needs its recipe: the recipe schema's models are not built.
    assert "seglab.recipes" not in modules and "seglab.recipeschema" not in modules


def test_gpus_on_a_local_only_workstation_imports_no_ssh_and_no_docker_sdk(
    tmp_path: Path,
) -> None:
    printed, modules = _run(tmp_path, "gpus", "--json")
    assert json.loads(printed)  # the stand-in's GPUs
    assert not {"asyncssh", "docker", "textual", "torch"} & modules


def test_version_is_answered_before_any_command_module_is_imported(tmp_path: Path) -> None:
    printed, modules = _run(tmp_path, "--version")
    assert printed.startswith("seglab ")
    assert not {"argparse", "pydantic", "yaml", "asyncssh", "docker", "textual"} & modules
    assert not any(name.startswith("seglab.") for name in modules - {"seglab.cli"})


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (found,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    choices: dict[str, argparse.ArgumentParser] = found.choices
    return choices


def test_each_quick_command_is_registered_by_the_module_it_names() -> None:
    """`seglab ps` builds only the parser of the module QUICK_COMMANDS names for it."""
    from seglab.cli import QUICK_COMMANDS, build_parser

    full = _commands(build_parser())
    for command, module in QUICK_COMMANDS.items():
        alone = _commands(build_parser((module,)))
        assert command in alone, f"{module} does not register {command}"
        assert alone[command].get_default("func") is full[command].get_default("func")
