"""Deterministic dashboard data: GPU states replayed from the real nvidia-smi captures
(through the stand-in and seglab's own parser) and a registry of seeded runs."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from seglab import recipes
from seglab.events import Event
from seglab.registry import RunRecord, RunStatus
from seglab.telemetry.history import HistoryStore
from seglab.telemetry.sample import GpuSample, HostSample, HostState, HostStatus
from seglab.telemetry.smi import (
    APP_FIELDS,
    FieldPlan,
    parse_compute_apps,
    parse_csv_table,
    supported_fields,
)
from seglab.workstation import Workstation
from tests.standin import STANDIN

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "tests" / "fixtures" / "recipes"
T0 = 1_780_000_000.0  # a fixed "now" for everything shown
H100 = "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt"
L40S = "linux-x86_64__nvidia-l40s__595.80.txt"


def _standin(capture: str, gpus: int, phase: str, *args: str) -> str:
    env = {
        **os.environ,
        "SEGLAB_STANDIN_PYTHON": sys.executable,
        "SEGLAB_STANDIN_CAPTURE": capture,
        "SEGLAB_STANDIN_GPUS": str(gpus),
        "SEGLAB_STANDIN_PHASE": phase,
    }
    out = subprocess.run(
        [str(STANDIN), *args], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout


def replay(capture: str, host: str, gpus: int, phase: str) -> list[GpuSample]:
    """One reading of ``gpus`` GPUs of a capture, parsed the way telemetry parses it."""
    plan = FieldPlan.choose(supported_fields(_standin(capture, gpus, phase, "--help-query-gpu")))
    text = _standin(
        capture, gpus, phase, f"--query-gpu={plan.query()}", "--format=csv,noheader,nounits"
    )
    samples = parse_csv_table(plan, text, host, T0)
    apps = parse_compute_apps(
        _standin(
            capture,
            gpus,
            phase,
            f"--query-compute-apps={','.join(APP_FIELDS)}",
            "--format=csv,noheader,nounits",
        )
    )
    return [replace(s, processes=tuple(p for p in apps if p.gpu_uuid == s.uuid)) for s in samples]


def replayed_states() -> tuple[list[HostState], HistoryStore]:
    """A busy local H100 pair, an idle remote L40S and a GPU-less box, with history."""
    busy = replay(H100, "local", 2, "load")
    # The second GPU is held by a seeded seglab run (attribution's result, as telemetry has it).
    held = busy[1]
    busy[1] = replace(
        held,
        processes=tuple(replace(p, run_id="tiny-grid.lr-low.a1b2c3") for p in held.processes[:1]),
    )
    idle = replay(H100, "local", 2, "idle")
    remote = replay(L40S, "lab1", 1, "idle")
    history = HistoryStore()
    for step in range(24):  # alternate the captured phases: a deterministic sparkline
        for gpu in busy if step % 3 else idle:
            history.push(gpu)
    cpu = HostSample(
        cpu_count=16,
        cpu_percent=23.0,
        memory_used_mib=12_288.0,
        memory_total_mib=65_536.0,
        load_1m=2.5,
    )
    states = [
        HostState(
            "local",
            "nvidia-smi",
            HostStatus.OK,
            gpus=tuple(busy),
            host_sample=cpu,
            updated=T0,
            driver_version="590.48.01",
        ),
        HostState(
            "lab1",
            "nvidia-smi",
            HostStatus.OK,
            gpus=tuple(remote),
            updated=T0,
            driver_version="595.80",
        ),
        HostState(
            "cpubox",
            "none",
            HostStatus.NO_GPU,
            message="no NVIDIA GPU (driver absent)",
            host_sample=cpu,
            updated=T0,
        ),
    ]
    return states, history


def _events(run_id: str, losses: list[float], mious: list[float], end: str | None) -> list[Event]:
    out = [
        Event(
            "start",
            0,
            T0,
            {
                "recipe": "tiny-grid",
                "variant": run_id,
                "class_names": ["background", "shape_1", "shape_2"],
                "total_iters": 8,
                "world_size": 1,
            },
        )
    ]
    seq = 1
    for i, loss in enumerate(losses, start=1):
        out.append(
            Event(
                "train",
                seq,
                T0 + i,
                {
                    "iter": i,
                    "epoch": 1 + (i - 1) // 4,
                    "loss": loss,
                    "lr": 0.001,
                    "img_per_s": 12.5,
                },
            )
        )
        seq += 1
        if i % 4 == 0 and i // 4 <= len(mious):
            miou = mious[i // 4 - 1]
            out.append(
                Event(
                    "eval",
                    seq,
                    T0 + i,
                    {
                        "iter": i,
                        "epoch": i // 4,
                        "miou": miou,
                        "pixel_acc": 0.5 + miou / 2,
                        "mean_acc": miou + 0.1,
                        "per_class_iou": [miou + 0.2, miou, miou - 0.2],
                    },
                )
            )
            seq += 1
    if end is not None:
        best = max(mious, default=None)
        out.append(Event("end", seq, T0 + 9, {"status": end, "best_miou": best}))
    return out


def seed_runs(ws: Workstation) -> list[str]:
    """Three runs of the tiny-grid ablation (running, finished, failed) with their events."""
    recipe = recipes.load(RECIPES / "tiny-grid.yaml")
    registry = ws._run_registry()
    spec = [
        (
            "tiny-grid.lr-low.a1b2c3",
            "lr=low",
            RunStatus.RUNNING,
            6,
            [0.41],
            [1.2, 1.1, 1.0, 0.9, 0.85, 0.8],
            None,
        ),
        (
            "tiny-grid.lr-high.d4e5f6",
            "lr=high",
            RunStatus.FINISHED,
            8,
            [0.38, 0.47],
            [1.2, 1.0, 0.9, 0.8, 0.7, 0.6, 0.55, 0.5],
            "finished",
        ),
        ("tiny.default.0a0b0c", "default", RunStatus.FAILED, 2, [], [1.3, 1.25], "failed"),
    ]
    for i, (run_id, variant, status, last, mious, losses, end) in enumerate(spec):
        final = status != RunStatus.RUNNING
        registry.upsert_run(
            RunRecord(
                run_id=run_id,
                recipe="tiny" if variant == "default" else "tiny-grid",
                variant=variant,
                recipe_sha="0" * 12,
                resolved_recipe=recipe.variant(
                    variant if variant != "default" else "lr=low"
                ).recipe.to_yaml(),
                host="local" if i < 2 else "cpubox",
                gpus=(f"GPU-{i:08d}",) if i < 2 else (),
                runtime="process",
                run_dir=f"/runs/{run_id}",
                status=status,
                created_at=T0 - 600 + i,
                started_at=T0 - 590 + i,
                finished_at=T0 - 100 if final else None,
                exit_code=(0 if status == RunStatus.FINISHED else 1) if final else None,
                best_miou=max(mious) if mious else None,
                last_iter=last,
                total_iters=8,
                last_loss=losses[-1],
                img_per_s=12.5,
                message="CUDA error: out of memory" if status == RunStatus.FAILED else None,
            )
        )
        registry.add_events(run_id, _events(run_id, losses, mious, end))
    return [s[0] for s in spec]


TRAIN_LOG = """\
start: 8 iterations, 4 per epoch, world size 1 on cpu
iter 1/8 epoch 1 loss 1.2114 lr 0.000497 grad 13.898 0.6 img/s
@seglab {"v":1,"kind":"train","seq":1,"time":1780000001.0,"iter":1,"loss":1.2114}
iter 2/8 epoch 1 loss 1.0858 lr 0.00071 grad 12.353 0.9 img/s
iter 3/8 epoch 1 loss 1.0651 lr 0.000838 grad 12.786 0.6 img/s
iter 4/8 epoch 1 loss 0.9458 lr 0.000879 grad 15.547 0.7 img/s
eval iter 4: mIoU 39.08% pixel acc 75.79% mean acc 58.31%
iter 5/8 epoch 2 loss 0.8742 lr 0.000827 grad 11.882 0.3 img/s
iter 6/8 epoch 2 loss 0.9593 lr 0.000574 grad 16.252 1.3 img/s
""".splitlines()
