"""Text that must fit narrow terminals: word-boundary ellipsis, chart legends, placement."""

from __future__ import annotations

from rich.text import Text

from seglab.tui.format import clip_words
from seglab.tui.metrics_chart import curve_labels
from seglab.tui.new_run import default_placement
from seglab.views import Curves


def test_clip_words_cuts_on_a_word_boundary() -> None:
    text = Text("local  this machine · nvidia-smi ok · driver 590.48.01 · no docker engine")
    clipped = clip_words(text, 50)
    assert clipped.plain == "local  this machine · nvidia-smi ok · driver…"
    assert len(clipped.plain) <= 50
    assert clip_words(text, 200) is text
    assert clip_words(Text("abcdefghijklmnop"), 8).plain == "abcdefg…"  # one long word


def test_two_runs_of_one_variant_are_told_apart_in_the_legend() -> None:
    curves = [
        Curves("grid.lr-low.a1b2c3", "lr-low", [], []),
        Curves("grid.lr-low.d4e5f6", "lr-low", [], []),
        Curves("grid.lr-high.0a0b0c", "lr-high", [], []),
    ]
    assert curve_labels(curves) == {
        "grid.lr-low.a1b2c3": "mIoU lr-low (a1b2c3)",
        "grid.lr-low.d4e5f6": "mIoU lr-low (d4e5f6)",
        "grid.lr-high.0a0b0c": "mIoU lr-high",
    }


def test_placement_defaults_to_a_cpu_when_no_gpu_is_free() -> None:
    no_gpu = [("auto", "auto: free GPUs on any host"), ("local:cpu", "local:cpu (no GPU)")]
    assert default_placement(no_gpu) == "local:cpu"
    with_gpu = [no_gpu[0], ("lab1:0", "lab1:0 L40S"), ("lab1:cpu", "lab1:cpu (no GPU)")]
    assert default_placement(with_gpu) == "auto"
