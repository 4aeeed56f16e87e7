"""The domain never imports Textual; nothing outside seglab.train imports torch.

Each module is imported in a fresh interpreter, so one module's imports cannot hide
another's.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import seglab

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
if sys.argv[2] == "parser":
    from seglab.cli import build_parser
    build_parser()
print(json.dumps({name: name in sys.modules for name in ("textual", "torch", "torchvision")}))
"""


def _modules() -> list[str]:
    names = ["seglab"]
    for info in pkgutil.walk_packages(seglab.__path__, prefix="seglab."):
        if not info.name.endswith(".__main__"):  # scripts: importing one runs it
            names.append(info.name)
    return sorted(names)


def _loaded(module: str, mode: str = "import") -> dict[str, bool]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, bool] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_the_package_has_modules_to_check() -> None:
    mods = _modules()
    assert "seglab.recipes" in mods
    assert "seglab.cli" in mods


@pytest.mark.parametrize("module", [m for m in _modules() if not m.startswith("seglab.tui")])
def test_domain_module_imports_no_textual(module: str) -> None:
    assert not _loaded(module)["textual"], f"{module} pulled in textual"


@pytest.mark.parametrize(
    "module",
    [m for m in _modules() if not m.startswith(("seglab.train", "seglab.tui"))],
)
def test_workstation_module_imports_no_torch(module: str) -> None:
    loaded = _loaded(module)
    assert not loaded["torch"], f"{module} pulled in torch"
    assert not loaded["torchvision"], f"{module} pulled in torchvision"


def test_building_the_whole_cli_imports_neither() -> None:
    loaded = _loaded("seglab.cli", "parser")
    assert loaded == {"textual": False, "torch": False, "torchvision": False}
