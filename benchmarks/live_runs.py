"""Real running runs for the status benchmarks: detached processes of the process runtime
that keep appending train events to their events.jsonl, registered like `seglab run` does.

Each run has a real resolved recipe (so its ETA is computed), a long event history written
before it starts, and a writer that appends one train event every ``period_s`` seconds.
Used by ``status_cost.py`` and ``tui_load.py``; the caller isolates XDG_* first.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from seglab import recipes
from seglab.events import Event
from seglab.registry import RunRecord, RunStatus
from seglab.runtime.process import ProcessRuntime
from seglab.runtime.spec import LaunchSpec
from seglab.workstation import Workstation

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "cityscapes-deeplabv3plus-r50.yaml"

# Appends one train event per period to events.jsonl in the current directory, forever.
WRITER = """
import json, sys, time
seq, period = int(sys.argv[1]), float(sys.argv[2])
with open("events.jsonl", "a") as out:
    while True:
        time.sleep(period)
        event = {"v": 1, "kind": "train", "seq": seq, "time": time.time(), "iter": seq,
                 "epoch": 1, "loss": 0.5, "lr": 0.01, "img_per_s": 12.5}
        out.write(json.dumps(event) + "\\n")
        out.flush()
        seq += 1
"""


def _history(count: int) -> str:
    start = Event(
        "start",
        0,
        time.time(),
        {
            "recipe": "bench",
            "variant": "default",
            "world_size": 1,
            "class_names": ["road", "car"],
            "total_iters": 10**7,
        },
    )
    lines = [json.dumps(start.to_dict())]
    for seq in range(1, count):
        data = {"iter": seq, "epoch": 1, "loss": 0.5, "lr": 0.01, "img_per_s": 12.5}
        lines.append(json.dumps(Event("train", seq, time.time(), data).to_dict()))
    return "\n".join(lines) + "\n"


def start_runs(count: int, events: int, period_s: float, prefix: str = "live") -> list[str]:
    """Start ``count`` running runs with ``events`` events each, writing on; their ids."""
    ws = Workstation()
    registry = ws._run_registry()
    root = ws._run_manager().runs_root(ws.inventory().get("local"))
    runtime = ProcessRuntime(root)
    recipe = recipes.load(RECIPE).variants[0].recipe
    text = recipe.to_yaml()
    history = _history(events)
    ids = []
    for i in range(count):
        run_id = f"{prefix}.v{i}.{i:06x}"
        run_dir = root / run_id
        run_dir.mkdir(parents=True)
        (run_dir / "events.jsonl").write_text(history)
        labels = {"seglab.run_id": run_id, "seglab.run_dir": str(run_dir), "seglab.host": "local"}
        spec = LaunchSpec(
            name=run_id,
            image="",
            command=(sys.executable, "-c", WRITER, str(events), str(period_s)),
            labels=labels,
            log_path=run_dir / "train.log",
            workdir=str(run_dir),
        )
        ref = runtime.launch(spec)
        registry.upsert_run(
            RunRecord(
                run_id=run_id,
                recipe="bench",
                variant=f"v{i}",
                recipe_sha="bench",
                resolved_recipe=text,
                host="local",
                gpus=(),
                runtime="process",
                handle=ref,
                run_dir=str(run_dir),
                status=RunStatus.RUNNING,
                created_at=time.time(),
            )
        )
        ids.append(run_id)
    return ids


def stop_runs(run_ids: list[str]) -> None:
    """Kill the writers (their run dirs stay in the isolated state dir)."""
    ws = Workstation()
    root = ws._run_manager().runs_root(ws.inventory().get("local"))
    runtime = ProcessRuntime(root)
    for run_id in run_ids:
        runtime.kill(str(root / run_id))


def seed_finished(count: int) -> None:
    """``count`` finished runs (registry rows only: they never change again)."""
    registry = Workstation()._run_registry()
    for i in range(count):
        registry.upsert_run(
            RunRecord(
                run_id=f"done.v{i}.{i:06x}",
                recipe="done",
                variant=f"v{i}",
                recipe_sha="done",
                resolved_recipe="",
                host="local",
                gpus=(),
                runtime="process",
                handle=f"/nonexistent/done{i}",
                run_dir="",
                status=RunStatus.FINISHED,
                created_at=time.time() - 86400,
                finished_at=time.time() - 3600,
                exit_code=0,
                last_iter=1000,
                total_iters=1000,
                best_miou=0.7,
            )
        )
