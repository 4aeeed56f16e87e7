"""The façade's run rows (the `seglab ps --json` shape) and the door the CLI and the
dashboard go through: neither reaches the run manager, the registry or the SSH bridge."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from seglab.kinds import RuntimeKind
from seglab.registry import Member, RunRecord, RunStatus
from seglab.views import RunRow

REPO = Path(__file__).resolve().parents[2]
PS_JSON_KEYS = [
    "run_id",
    "recipe",
    "variant",
    "status",
    "host",
    "gpus",
    "where",
    "members",
    "runtime",
    "iteration",
    "total_iterations",
    "progress",
    "eta_s",
    "last_loss",
    "best_miou",
    "img_per_s",
    "age_s",
    "exit_code",
    "run_dir",
    "message",
    "queue_position",
]


def _record(**fields: object) -> RunRecord:
    base: dict[str, object] = {
        "run_id": "grid.lr-low.a1b2c3",
        "recipe": "grid",
        "variant": "lr=low",
        "host": "lab1",
        "gpus": ("0", "1"),
        "runtime": "docker",
        "run_dir": "/runs/grid.lr-low.a1b2c3",
        "status": RunStatus.RUNNING,
        "created_at": 1000.0,
        "last_iter": 50,
        "total_iters": 200,
        "img_per_s": 30.0,
    }
    base.update(fields)
    return RunRecord(**base)  # type: ignore[arg-type]


def test_a_row_keeps_the_documented_json_shape() -> None:
    row = RunRow.of(_record(), batch_size=lambda: 6, now=1060.0)
    data = row.to_json()
    assert list(data) == PS_JSON_KEYS
    assert data["status"] == "running" and type(data["status"]) is str
    assert data["runtime"] == "docker" and type(data["runtime"]) is str
    assert data["gpus"] == ["0", "1"]
    assert data["where"] == "lab1:2gpu"
    assert data["members"] == []
    assert data["progress"] == pytest.approx(0.25)
    assert data["eta_s"] == pytest.approx(150 * 6 / 30.0)
    assert data["age_s"] == pytest.approx(60.0)


def test_a_multi_node_row_lists_its_members() -> None:
    members = (Member("lab1", ("0",), "c1", "/r/m0"), Member("lab2", (), "c2", ""))
    data = RunRow.of(_record(members=members), batch_size=lambda: 1).to_json()
    assert data["where"] == "lab1:1gpu+lab2:cpu"
    assert data["members"] == [
        {"host": "lab1", "gpus": ["0"], "run_dir": "/r/m0"},
        {"host": "lab2", "gpus": [], "run_dir": None},
    ]


def test_an_ended_run_has_no_eta_and_never_reads_its_recipe() -> None:
    def unread() -> int:
        raise AssertionError("the batch size of an ended run was read")

    row = RunRow.of(_record(status=RunStatus.FINISHED), batch_size=unread)
    assert row.eta_s is None
    assert row.ended and row.has_log
    queued = RunRow.of(
        _record(status=RunStatus.QUEUED, runtime="auto", last_iter=None), batch_size=unread
    )
    assert queued.runtime is RuntimeKind.AUTO
    assert not queued.ended and not queued.has_log


def test_runtime_kinds_parse_with_the_choices_named() -> None:
    assert RuntimeKind.parse("slurm") is RuntimeKind.SLURM
    with pytest.raises(Exception, match="choose one of docker, process, slurm"):
        RuntimeKind.parse("auto", auto=False)
    with pytest.raises(Exception, match="unknown runtime 'podman'"):
        RuntimeKind.parse("podman")


INTERNALS = {"runs", "registry", "remote", "_run_manager", "_run_registry"}


@pytest.mark.parametrize("package", ["seglab/commands", "seglab/tui"])
def test_cli_and_dashboard_never_reach_past_the_facade(package: str) -> None:
    reached = []
    for path in sorted((REPO / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in INTERNALS
                and not node.args
            ):
                reached.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.func.attr}()")
    assert reached == []
