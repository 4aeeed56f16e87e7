"""The metrics pane: mIoU of every variant of the selected run's ablation, and its loss."""

from __future__ import annotations

from collections.abc import Sequence

from textual_plotext import PlotextPlot

from seglab.workstation import Curves


class MetricsChart(PlotextPlot):
    """mIoU per variant (left axis, 0-1) and the selected run's loss (right axis)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._key: object = None
        self.shown: list[Curves] = []

    def show(self, curves: Sequence[Curves], selected: str | None) -> None:
        """Redraw from ``curves`` (a no-op when nothing changed)."""
        key = (selected, tuple((c.run_id, len(c.loss), len(c.miou)) for c in curves))
        if key == self._key:
            return
        self._key = key
        self.shown = list(curves)
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("mIoU per variant · loss of the selected run")
        drawn = False
        for item in curves:
            if item.miou:
                plt.plot([p[0] for p in item.miou], [p[1] for p in item.miou],
                         label=f"mIoU {item.variant}", marker="braille")
                drawn = True
        for item in curves:
            if item.run_id == selected and item.loss:
                plt.plot([p[0] for p in item.loss], [p[1] for p in item.loss],
                         label="loss", yside="right", marker="braille")
                drawn = True
        if not drawn:
            plt.title("no metrics yet: the chart fills as the run trains and evaluates")
        plt.xlabel("iteration")
        self.refresh()
