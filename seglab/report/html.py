"""The report as one self-contained HTML file: inline CSS, images as data URIs, no script."""

from __future__ import annotations

import base64
import time
from html import escape
from typing import Any

from seglab.report.curves import curves_png
from seglab.report.gather import RunSummary
from seglab.report.tables import GRID_COLUMNS, diffs, fmt, grid_rows, heat_colour, heat_table, pct

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; background: #fff; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; font-size: 13px; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.heat { color: #fff; text-align: right; }
img.sample { image-rendering: pixelated; width: 192px; display: block; }
figure { display: inline-block; margin: 0 6px 6px 0; }
figcaption { font-size: 11px; color: #555; }
code { font-size: 12px; }
"""


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _cell(value: Any, key: str) -> str:
    if key in ("best_miou", "pixel_acc"):
        return f'<td class="num">{pct(value)}</td>'
    if key == "miou_per_eval":
        text = ", ".join(f"{it}: {pct(m)}" for it, m in value)
        return f"<td>{escape(text)}</td>"
    if isinstance(value, float):
        return f'<td class="num">{escape(fmt(value))}</td>'
    return f"<td>{escape(fmt(value))}</td>"


def grid_html(runs: list[RunSummary]) -> str:
    """The grid table."""
    head = "".join(f"<th>{escape(c.replace('_', ' '))}</th>" for c in GRID_COLUMNS)
    body = "".join(
        "<tr>" + "".join(_cell(row[c], c) for c in GRID_COLUMNS) + "</tr>"
        for row in grid_rows(runs)
    )
    return f'<table id="grid"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def heat_html(runs: list[RunSummary]) -> str:
    """The per-class IoU heat table (classes x variants, worst classes first)."""
    heat = heat_table(runs)
    head = "<th>class</th>" + "".join(f"<th>{escape(v)}</th>" for v in heat.variants)
    rows = []
    for name, values in zip(heat.classes, heat.values, strict=True):
        cells = "".join(
            f'<td class="heat" style="background: {heat_colour(v)}">{pct(v)}</td>' for v in values
        )
        rows.append(f"<tr><th>{escape(name)}</th>{cells}</tr>")
    return (
        f'<table id="per-class"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def samples_html(runs: list[RunSummary]) -> str:
    """Each sample image: its image and ground truth, then every variant's overlay and error
    map side by side."""
    with_samples = [r for r in runs if r.samples]
    if not with_samples:
        return (
            "<p>No prediction samples (the runs have not evaluated yet, or train.samples is 0).</p>"
        )
    ids = [s.id for s in with_samples[0].samples]
    parts = []
    for sample_id in ids:
        figures = []
        first = next(s for s in with_samples[0].samples if s.id == sample_id)
        for view, caption in (("image", "image"), ("gt", "ground truth")):
            if view in first.views:
                figures.append(_figure(first.views[view], caption, None, view))
        for run in with_samples:
            found = next((s for s in run.samples if s.id == sample_id), None)
            if found is None:
                continue
            for view in ("overlay", "error"):
                if view in found.views:
                    caption = f"{run.variant} @ {run.samples_iter}: {view}"
                    figures.append(_figure(found.views[view], caption, run.variant, view))
        parts.append(
            f'<section class="sample"><h3>{escape(sample_id)}</h3>{"".join(figures)}</section>'
        )
    return '<div id="samples">' + "".join(parts) + "</div>"


def _figure(png: bytes, caption: str, variant: str | None, view: str) -> str:
    attr = f' data-variant="{escape(variant)}"' if variant is not None else ""
    return (
        f'<figure><img class="sample" src="{data_uri(png)}" alt="{escape(caption)}"'
        f' data-view="{view}"{attr}><figcaption>{escape(caption)}</figcaption></figure>'
    )


def diffs_html(runs: list[RunSummary], base: dict[str, Any] | None, base_name: str) -> str:
    """Each variant's recipe keys that differ from the base."""
    parts = []
    for variant, diff in diffs(runs, base).items():
        if not diff:
            parts.append(f"<h3>{escape(variant)}</h3><p>same as {escape(base_name)}</p>")
            continue
        rows = "".join(
            f"<tr><td><code>{escape(k)}</code></td><td>{escape(repr(a))}</td>"
            f"<td>{escape(repr(b))}</td></tr>"
            for k, (a, b) in diff.items()
        )
        parts.append(
            f'<h3>{escape(variant)}</h3><table class="diff"><thead><tr><th>key</th>'
            f"<th>{escape(base_name)}</th><th>{escape(variant)}</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    return '<div id="recipe-diff">' + "".join(parts) + "</div>"


def render_html(
    title: str, runs: list[RunSummary], base: dict[str, Any] | None, base_name: str
) -> str:
    """The whole report page."""
    curves = curves_png(runs)
    curves_part = (
        f'<img id="curves" src="{data_uri(curves)}" alt="mIoU curves">'
        if curves is not None
        else "<p>No evaluations yet.</p>"
    )
    made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<p>{len(runs)} run(s); generated by seglab on {made}.</p>
<h2>Runs</h2>
{grid_html(runs)}
<h2>Per-class IoU (best evaluation, worst classes first)</h2>
{heat_html(runs)}
<h2>mIoU curves</h2>
{curves_part}
<h2>Prediction samples</h2>
{samples_html(runs)}
<h2>Recipe differences (vs {escape(base_name)})</h2>
{diffs_html(runs, base, base_name)}
</body>
</html>
"""
