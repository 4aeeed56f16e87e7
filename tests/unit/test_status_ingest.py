"""Ingesting a run's events.jsonl from the registry's cursor: each refresh reads only the
bytes appended since the last one, on the real SQLite registry and real files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from seglab import recipes
from seglab.events import Event
from seglab.machines import LocalMachine, LoopThread, MachineSync
from seglab.registry import Registry, RunRecord, RunStatus
from seglab.runs.hostio import read_new_events
from seglab.runs.records import _parse_recipe, resolved_recipe


def _record(run_dir: Path, resolved: str = "") -> RunRecord:
    return RunRecord(
        run_id="r.default.a1b2c3",
        recipe="r",
        variant="default",
        recipe_sha="abc",
        resolved_recipe=resolved,
        host="local",
        gpus=(),
        runtime="process",
        handle="1",
        run_dir=str(run_dir),
        status=RunStatus.RUNNING,
    )


def _line(seq: int, kind: str = "train") -> str:
    data: dict[str, object] = {"iter": seq, "epoch": 0, "loss": 1.0 / (seq + 1), "lr": 0.01}
    if kind == "start":
        data = {
            "recipe": "r",
            "variant": "default",
            "world_size": 1,
            "class_names": ["a", "b"],
            "total_iters": 100,
        }
    return json.dumps(Event(kind, seq, 1.0 + seq, data).to_dict()) + "\n"


@pytest.fixture(scope="module")
def machine() -> Iterator[MachineSync]:
    loop = LoopThread("test-ingest")
    yield MachineSync(LocalMachine(), loop)
    loop.close()


def test_a_read_starts_at_the_cursor_and_leaves_a_partial_line(
    tmp_path: Path, machine: MachineSync
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(_line(0, "start") + _line(1) + '{"v": 1, "ki')
    found, cursor = read_new_events(machine, str(path), (0, 0))
    assert [e.seq for e in found] == [0, 1]
    assert cursor == (0, len(_line(0, "start") + _line(1)))
    with open(path, "a") as handle:
        handle.write(_line(2)[len('{"v": 1, "ki') :] + _line(3))
    found, after = read_new_events(machine, str(path), cursor)
    assert [e.seq for e in found] == [2, 3]
    assert after[1] == path.stat().st_size
    assert read_new_events(machine, str(path), after) == ([], after)  # nothing new


def test_a_rewritten_or_shorter_file_is_read_from_its_start(
    tmp_path: Path, machine: MachineSync
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(_line(0, "start") + _line(1) + _line(2))
    _, cursor = read_new_events(machine, str(path), (0, 0))
    replacement = tmp_path / "new.jsonl"
    replacement.write_text(_line(0, "start") + _line(10) + _line(11) + _line(12))
    replacement.replace(path)  # no newline where the cursor expects the last one
    assert [e.seq for e in read_new_events(machine, str(path), cursor)[0]] == [0, 10, 11, 12]
    path.write_text(_line(0, "start"))  # shorter than the cursor
    assert [e.seq for e in read_new_events(machine, str(path), (0, 10**6))[0]] == [0]
    missing = str(tmp_path / "missing.jsonl")
    assert read_new_events(machine, missing, (0, 7)) == ([], (0, 7))


def test_the_registry_keeps_the_cursor_per_run(tmp_path: Path) -> None:
    record = _record(tmp_path)
    with Registry(tmp_path / "registry.sqlite3") as reg:
        assert reg.cursor(record.run_id) == (0, 0)
        reg.set_cursor(record.run_id, 5, 10)  # no such run: nothing kept
        assert reg.cursor(record.run_id) == (0, 0)
        reg.upsert_run(record)
        reg.set_cursor(record.run_id, 5, 10)
        reg.set_cursor(record.run_id, 5, 20)
        assert reg.cursor(record.run_id) == (5, 20)
        reg.delete_run(record.run_id)
        assert reg.cursor(record.run_id) == (0, 0)


def test_a_resolved_recipe_is_parsed_once_per_run_and_sha(tmp_path: Path) -> None:
    recipe = recipes.load("recipes/cityscapes-deeplabv3plus-r50.yaml").variants[0].recipe
    record = _record(tmp_path, recipe.to_yaml())
    first = resolved_recipe(record)
    assert first == recipe
    hits = _parse_recipe.cache_info().hits
    assert resolved_recipe(record) is first
    assert _parse_recipe.cache_info().hits == hits + 1
