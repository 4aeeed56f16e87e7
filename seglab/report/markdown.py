"""The report's Markdown twin: the same sections, images inlined as data URIs."""

from __future__ import annotations

from typing import Any

from seglab.report.curves import curves_png
from seglab.report.gather import RunSummary
from seglab.report.html import data_uri
from seglab.report.tables import GRID_COLUMNS, diffs, fmt, grid_rows, heat_table, pct


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _cell(value: Any, key: str) -> str:
    if key in ("best_miou", "pixel_acc"):
        return pct(value)
    if key == "miou_per_eval":
        return ", ".join(f"{it}: {pct(m)}" for it, m in value)
    return _md(fmt(value))


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def render_markdown(
    title: str, runs: list[RunSummary], base: dict[str, Any] | None, base_name: str
) -> str:
    """The whole report as Markdown."""
    lines = [f"# {title}", "", "## Runs", ""]
    lines += _table(
        [c.replace("_", " ") for c in GRID_COLUMNS],
        [[_cell(row[c], c) for c in GRID_COLUMNS] for row in grid_rows(runs)],
    )
    heat = heat_table(runs)
    lines += ["## Per-class IoU (best evaluation, worst classes first)", ""]
    lines += _table(
        ["class", *map(_md, heat.variants)],
        [
            [_md(n), *(pct(v) for v in vals)]
            for n, vals in zip(heat.classes, heat.values, strict=True)
        ],
    )
    curves = curves_png(runs)
    lines += ["## mIoU curves", ""]
    lines += [f"![mIoU curves]({data_uri(curves)})" if curves else "No evaluations yet.", ""]
    lines += ["## Prediction samples", ""]
    with_samples = [r for r in runs if r.samples]
    for sample in with_samples[0].samples if with_samples else []:
        lines += [f"### {_md(sample.id)}", ""]
        head, cells = [], []
        for run in with_samples:
            found = next((s for s in run.samples if s.id == sample.id), None)
            if found is not None and "overlay" in found.views:
                head.append(f"{_md(run.variant)} @ {run.samples_iter}")
                cells.append(f"![{_md(run.variant)}]({data_uri(found.views['overlay'])})")
        lines += _table(head, [cells])
    lines += [f"## Recipe differences (vs {_md(base_name)})", ""]
    for variant, diff in diffs(runs, base).items():
        lines += [f"### {_md(variant)}", ""]
        if not diff:
            lines += [f"same as {_md(base_name)}", ""]
            continue
        lines += _table(
            ["key", _md(base_name), _md(variant)],
            [[f"`{k}`", _md(repr(a)), _md(repr(b))] for k, (a, b) in diff.items()],
        )
    return "\n".join(lines)
