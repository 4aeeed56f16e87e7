"""The synthetic smoke grid trained on CPU, and its runs entered in a real registry.

Used by the samples and report tests: each variant is a real trainer subprocess; the
registry gets the records and events a launch would have given it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import yaml

from seglab.events import Event, read_jsonl
from seglab.kinds import RuntimeKind
from seglab.recipes import load
from seglab.registry import Registry, RunRecord, RunStatus
from tests.unit.test_train_run import REPO, train_cmd, train_env

GRID = REPO / "recipes" / "synthetic-smoke-ablation.yaml"
VAL_SIZE = 8
"""Samples = the whole validation split, so the samples' counts are the evaluation's."""


def grid_recipes(folder: Path) -> dict[str, Path]:
    """Each variant of the smoke ablation as a small resolved recipe (2 short epochs, the
    whole validation split as samples), by variant name."""
    out = {}
    for variant in load(GRID).variants:
        data = variant.recipe.model_dump(mode="json")
        data["data"]["synthetic"].update(train_size=32, val_size=VAL_SIZE)
        data["train"].update(epochs=2, samples=VAL_SIZE)
        path = folder / f"{variant.slug}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        out[variant.name] = path
    return out


def start_grid(folder: Path) -> dict[str, tuple[Path, subprocess.Popen[str]]]:
    """Start every variant's trainer (in parallel); returns variant -> (run dir, process)."""
    procs = {}
    for variant, recipe in grid_recipes(folder).items():
        run_dir = folder / "runs" / recipe.stem
        proc = subprocess.Popen(
            train_cmd(recipe, run_dir),
            env=train_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs[variant] = (run_dir, proc)
    return procs


def events_of(run_dir: Path) -> list[Event]:
    """The run's events.jsonl records."""
    with (run_dir / "events.jsonl").open(encoding="utf-8") as handle:
        return list(read_jsonl(handle))


def register(state_dir: Path, run_dirs: dict[str, Path]) -> list[str]:
    """Enter the finished runs in the registry at ``state_dir`` (as a launch would)."""
    ids = []
    with Registry(state_dir / "registry.sqlite3") as registry:
        for variant, run_dir in run_dirs.items():
            run_id = f"synthetic-smoke-ablation.{run_dir.name}.abc123"
            events = events_of(run_dir)
            end = next(e for e in events if e.kind == "end")
            registry.upsert_run(
                RunRecord(
                    run_id=run_id,
                    recipe="synthetic-smoke-ablation",
                    variant=variant,
                    recipe_sha="0123456789ab",
                    resolved_recipe=(run_dir / "recipe.yaml").read_text(),
                    host="local",
                    runtime=RuntimeKind.PROCESS,
                    run_dir=str(run_dir),
                    status=RunStatus.FINISHED,
                    created_at=events[0].time,
                    started_at=events[0].time,
                    finished_at=end.time,
                    exit_code=0,
                )
            )
            registry.add_events(run_id, events)
            ids.append(run_id)
    return ids


def wait_all(procs: dict[str, tuple[Path, subprocess.Popen[str]]], timeout: float) -> None:
    """Wait for every trainer; fail with its stderr when one exits non-zero."""
    deadline = time.monotonic() + timeout
    for variant, (_, proc) in procs.items():
        _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert proc.returncode == 0, f"{variant} failed:\n{err[-3000:]}"
