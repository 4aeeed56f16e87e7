"""The metrics pane: mIoU of every variant of the selected run's ablation, and its loss.

The plot widget (textual-plotext) is imported and mounted with the first data, so that
the dashboard's first frame does not wait for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from textual.containers import Vertical
from textual.widgets import Static

if TYPE_CHECKING:
    from textual_plotext import PlotextPlot

    from seglab.views import Curves


def curve_labels(curves: Sequence[Curves]) -> dict[str, str]:
    """A legend label per run: its variant, with the run id's tail when two runs of one
    variant are drawn together (a resubmitted variant, say)."""
    counts = Counter(item.variant for item in curves)
    return {
        item.run_id: f"mIoU {item.variant}"
        + (f" ({item.run_id.rsplit('.', 1)[-1]})" if counts[item.variant] > 1 else "")
        for item in curves
    }


class MetricsChart(Vertical):
    """mIoU per variant (left axis, 0-1) and the selected run's loss (right axis)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(Static("metrics of the selected run appear here", classes="hint"), id=id)
        self._key: object = None
        self._plot: PlotextPlot | None = None
        self.shown: list[Curves] = []

    def _plot_widget(self) -> PlotextPlot:
        if self._plot is None:
            from textual_plotext import PlotextPlot

            self.remove_children()
            self._plot = PlotextPlot()
            self.mount(self._plot)
        return self._plot

    def show(self, curves: Sequence[Curves], selected: str | None) -> None:
        """Redraw from ``curves`` (a no-op when nothing changed)."""
        key = (selected, tuple((c.run_id, len(c.loss), len(c.miou)) for c in curves))
        if key == self._key:
            return
        self._key = key
        self.shown = list(curves)
        plot = self._plot_widget()
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("mIoU per variant · loss of the selected run")
        drawn = False
        labels = curve_labels(curves)
        for item in curves:
            if item.miou:
                plt.plot(
                    [p[0] for p in item.miou],
                    [p[1] for p in item.miou],
                    label=labels[item.run_id],
                    marker="braille",
                )
                drawn = True
        for item in curves:
            if item.run_id == selected and item.loss:
                plt.plot(
                    [p[0] for p in item.loss],
                    [p[1] for p in item.loss],
                    label="loss",
                    yside="right",
                    marker="braille",
                )
                drawn = True
        if not drawn:
            plt.title("no metrics yet: the chart fills as the run trains and evaluates")
        plt.xlabel("iteration")
        plot.refresh()
