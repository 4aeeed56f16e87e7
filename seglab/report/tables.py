"""The numbers of a report: the grid table, the per-class heat table, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from seglab.report.gather import RunSummary, recipe_diff

GRID_COLUMNS = (
    "variant",
    "run_id",
    "status",
    "best_miou",
    "best_iter",
    "miou_per_eval",
    "pixel_acc",
    "img_per_s",
    "gpu_hours",
    "host",
    "image",
    "image_digest",
    "recipe_sha",
)


def grid_rows(runs: list[RunSummary]) -> list[dict[str, Any]]:
    """One row per run of the grid table (numbers as numbers, None when unknown)."""
    rows = []
    for run in runs:
        best = run.best
        rows.append(
            {
                "variant": run.variant,
                "run_id": run.run_id,
                "status": run.status,
                "best_miou": None if best is None else best["miou"],
                "best_iter": None if best is None else best["iter"],
                "miou_per_eval": [[e["iter"], e.get("miou")] for e in run.evals],
                "pixel_acc": None if best is None else best.get("pixel_acc"),
                "img_per_s": run.img_per_s,
                "gpu_hours": run.gpu_hours,
                "host": run.host,
                "image": run.image,
                "image_digest": run.image_digest,
                "recipe_sha": run.recipe_sha,
            }
        )
    return rows


@dataclass(frozen=True)
class HeatTable:
    """Per-class IoU of the best evaluation of each run: classes x variants, worst first."""

    variants: list[str]
    classes: list[str]
    values: list[list[float | None]]


def heat_table(runs: list[RunSummary]) -> HeatTable:
    """Classes sorted by their lowest IoU over the runs (unknown counts as 0), worst first."""
    names = next((r.class_names for r in runs if r.class_names), [])
    columns: list[list[float | None]] = []
    for run in runs:
        best = run.best
        ious = list(best.get("per_class_iou") or []) if best else []
        columns.append([ious[i] if i < len(ious) else None for i in range(len(names))])

    def lowest(i: int) -> float:
        return min((float(c[i] or 0.0) for c in columns), default=0.0)

    order = sorted(range(len(names)), key=lowest)
    return HeatTable(
        variants=[r.variant for r in runs],
        classes=[names[i] for i in order],
        values=[[c[i] for c in columns] for i in order],
    )


def heat_colour(iou: float | None) -> str:
    """A CSS colour for an IoU: red at 0 through yellow to green at 1 (grey when unknown)."""
    if iou is None:
        return "#888888"
    return f"hsl({round(120 * max(0.0, min(1.0, iou)))}, 70%, 42%)"


def fmt(value: Any, digits: int = 2) -> str:
    """A cell's text: percentages for fractions, '-' for None."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal ('-' when unknown)."""
    return "-" if value is None else f"{100 * value:.1f}"


def diffs(runs: list[RunSummary], base: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per variant, the recipe keys that differ from `base` (else the first run)."""
    reference = base if base is not None else (runs[0].resolved if runs else {})
    return {r.variant: recipe_diff(reference, r.resolved) for r in runs}


def to_json(runs: list[RunSummary], base: dict[str, Any] | None) -> str:
    """The `--format json` document: grid rows, heat table and recipe diffs."""
    heat = heat_table(runs)
    doc = {
        "runs": grid_rows(runs),
        "per_class_iou": {
            "variants": heat.variants,
            "classes": heat.classes,
            "values": heat.values,
        },
        "recipe_diff": {
            variant: {key: {"base": a, "variant": b} for key, (a, b) in diff.items()}
            for variant, diff in diffs(runs, base).items()
        },
    }
    return json.dumps(doc, indent=2)


def to_csv(runs: list[RunSummary]) -> str:
    """The `--format csv` table: one row per run, per-class IoU columns after the grid's."""
    names = next((r.class_names for r in runs if r.class_names), [])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*GRID_COLUMNS, *(f"iou:{n}" for n in names)])
    for column, row in enumerate(grid_rows(runs)):
        best = runs[column].best
        ious = list(best.get("per_class_iou") or []) if best else []
        cells = [row[c] for c in GRID_COLUMNS]
        cells[GRID_COLUMNS.index("miou_per_eval")] = " ".join(
            f"{it}:{fmt(m, 4)}" for it, m in row["miou_per_eval"]
        )
        writer.writerow(
            ["" if c is None else c for c in cells] + ["" if v is None else v for v in ious]
        )
    return out.getvalue()
