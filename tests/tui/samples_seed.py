"""Two finished runs of an ablation with prediction samples on disk, for the preview tests.

The sample files are the trainer's layout (samples/iter_N/<id>_<view>.png + index.json,
samples/reference/), drawn here with the trainer's palette so the pictures are fixed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from seglab.events import Event
from seglab.registry import Registry, RunRecord, RunStatus
from tests.tui.replay import T0

CLASSES = ["background", "road", "pole", "rider"]
COLOURS = np.array([[64, 64, 64], [128, 64, 128], [153, 153, 153], [255, 0, 0]], dtype=np.uint8)
IDS = ["val_00000", "val_00010", "val_00020"]
ITERATIONS = (4, 8)
RUNS = (("abl.half.aaaaaa", "res=half", 0.31), ("abl.full.bbbbbb", "res=full", 0.52))


def _label(seed: int) -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:48]
    label = np.zeros((32, 48), dtype=np.uint8)
    label[yy > 20] = 1
    label[(xx > 10 + seed * 8) & (xx < 14 + seed * 8)] = 2
    label[(yy - 12) ** 2 + (xx - 34 + seed * 3) ** 2 < 30] = 3
    return label


def _png(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).save(path)


def write_samples(run_dir: Path, quality: float) -> None:
    """Samples of both evaluations: predictions that get better with `quality`."""
    reference = run_dir / "samples" / "reference"
    reference.mkdir(parents=True)
    for n, sample_id in enumerate(IDS):
        label = _label(n)
        image = (COLOURS[label] * 0.6 + 50).astype(np.uint8)
        _png(reference / f"{sample_id}_image.png", image)
        _png(reference / f"{sample_id}_gt.png", COLOURS[label])
    for iteration in ITERATIONS:
        folder = run_dir / "samples" / f"iter_{iteration}"
        folder.mkdir(parents=True)
        images = []
        for n, sample_id in enumerate(IDS):
            label = _label(n)
            pred = label.copy()
            cut = int(48 * (1 - quality * iteration / 8))
            pred[:, :cut][pred[:, :cut] > 1] = 0
            colour = COLOURS[pred]
            _png(folder / f"{sample_id}_pred.png", colour)
            image = (COLOURS[label] * 0.6 + 50).astype(np.uint16)
            _png(folder / f"{sample_id}_overlay.png", ((image + colour) // 2).astype(np.uint8))
            error = np.where((pred == label)[..., None], [40, 160, 70], [220, 40, 40])
            _png(folder / f"{sample_id}_error.png", error.astype(np.uint8))
            correct = int((pred == label).sum())
            images.append(
                {
                    "id": sample_id,
                    "index": n * 10,
                    "size": [32, 48],
                    "correct": correct,
                    "wrong": label.size - correct,
                    "ignored": 0,
                }
            )
        index = {
            "iter": iteration,
            "dir": f"samples/iter_{iteration}",
            "palette": "cityscapes",
            "views": ["pred", "overlay", "error"],
            "images": images,
            "seconds": 0.01,
        }
        (folder / "index.json").write_text(json.dumps(index))


def seed_sample_runs(state_dir: Path, runs_root: Path, host: str = "local") -> list[str]:
    """The two runs (on `host`) in the registry at `state_dir`, their run dirs under
    `runs_root`."""
    ids = []
    with Registry(state_dir / "registry.sqlite3") as registry:
        for order, (run_id, variant, quality) in enumerate(RUNS):
            run_dir = runs_root / run_id
            write_samples(run_dir, quality)
            registry.upsert_run(
                RunRecord(
                    run_id=run_id,
                    recipe="abl",
                    variant=variant,
                    recipe_sha="0" * 12,
                    host=host,
                    runtime="process",
                    run_dir=str(run_dir),
                    status=RunStatus.FINISHED,
                    created_at=T0 - 600 + order,
                    started_at=T0 - 590 + order,
                    finished_at=T0 - 100,
                    exit_code=0,
                    best_miou=quality,
                    last_iter=8,
                    total_iters=8,
                )
            )
            events = [
                Event(
                    "start",
                    0,
                    T0,
                    {
                        "recipe": "abl",
                        "variant": variant,
                        "world_size": 1,
                        "class_names": CLASSES,
                        "total_iters": 8,
                    },
                )
            ]
            for n, iteration in enumerate(ITERATIONS):
                miou = quality * iteration / 8
                events.append(
                    Event(
                        "eval",
                        1 + 2 * n,
                        T0 + iteration,
                        {
                            "iter": iteration,
                            "epoch": n + 1,
                            "miou": miou,
                            "pixel_acc": 0.5 + miou / 2,
                            "mean_acc": miou,
                            "per_class_iou": [0.9, 0.8 * quality, 0.3 * quality, 0.1 * quality],
                        },
                    )
                )
                index = json.loads(
                    (run_dir / "samples" / f"iter_{iteration}" / "index.json").read_text()
                )
                events.append(Event("samples", 2 + 2 * n, T0 + iteration, index))
            registry.add_events(run_id, events)
            ids.append(run_id)
    return ids
