"""The mIoU curves of a report as one PNG (matplotlib, imported only when drawn)."""

from __future__ import annotations

import io

from seglab.report.gather import RunSummary


def curves_png(runs: list[RunSummary]) -> bytes | None:
    """mIoU against iteration, one line per variant; None when no run has an evaluation."""
    series = [
        (
            run.variant,
            [(int(e["iter"]), float(e["miou"])) for e in run.evals if e.get("miou") is not None],
        )
        for run in runs
    ]
    if not any(points for _, points in series):
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7.0, 3.6), dpi=100)
    try:
        for variant, points in series:
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, [100 * y for y in ys], marker="o", markersize=3, label=variant)
        axes.set_xlabel("iteration")
        axes.set_ylabel("mIoU (%)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return buffer.getvalue()
