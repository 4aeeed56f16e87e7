"""The dashboard's cell formatting, and the history tail its sparklines read."""

from __future__ import annotations

from seglab.telemetry.history import GpuHistory
from seglab.telemetry.sample import GpuSample
from seglab.tui.format import DASH, bar, duration, level_style, num, progress_text, sparkline


def test_missing_values_are_dashes_never_zero() -> None:
    assert num(None, ".1f", "W") == DASH
    assert num(0.0, ".1f", "W") == "0.0W"
    assert bar(None, 4).plain == "····"
    assert progress_text(None, None).plain == DASH
    assert level_style(None, 50, 90) == "dim"


def test_bars_thresholds_and_durations() -> None:
    assert bar(0.5, 8).plain == "████░░░░"
    assert bar(1.7, 4).plain == "████"  # clamped
    assert (level_style(49, 50, 90), level_style(50, 50, 90), level_style(95, 50, 90)) == (
        "green",
        "yellow",
        "bold red",
    )
    assert [duration(s) for s in (None, 42, 185, 3725)] == [DASH, "42s", "3m05s", "1h02m"]
    assert progress_text(0.75, 61.0, width=4).plain == "███░  75% 1m01s"


def test_sparkline_scales_gaps_and_pads() -> None:
    assert sparkline([0.0, 50.0, 100.0, None], 6) == "  ▁▅█ "
    assert sparkline([10.0] * 20, 4) == "▁▁▁▁"


def test_history_tail_is_the_end_of_values_across_the_ring_wrap() -> None:
    history = GpuHistory(capacity=5)
    assert history.tail("utilization_gpu", 3) == []
    for step in range(8):  # wraps: only the last 5 are kept
        util = None if step == 6 else float(step)
        history.push(GpuSample(host="h", index=0, uuid="GPU-x", utilization_gpu=util))
    assert history.values("utilization_gpu") == [3.0, 4.0, 5.0, None, 7.0]
    assert history.tail("utilization_gpu", 3) == [5.0, None, 7.0]
    assert history.tail("utilization_gpu", 9) == history.values("utilization_gpu")
