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


def _cycles() -> list[list[str]]:
    """Strongly connected groups (size > 1) of seglab modules in the import graph."""
    import grimp

    graph = grimp.build_graph("seglab", exclude_type_checking_imports=True)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if not imported.startswith("seglab"):
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group: list[str] = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


def test_no_import_cycle_among_seglab_modules() -> None:
    """Function-level imports count too: a cycle hidden in a function is still a cycle."""
    assert _cycles() == []


LINT_IMPORTS = (
    "import sys; from importlinter.cli import lint_imports_command; "
    "sys.exit(lint_imports_command())"
)


def test_import_contracts_hold() -> None:
    """The layer contracts in pyproject.toml (import-linter), as `.ci/run` checks them."""
    out = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:]
