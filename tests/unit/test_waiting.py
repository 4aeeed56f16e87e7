"""`seglab run --wait`: the progress text, the terminal redraw and the plain-line cadence."""

from __future__ import annotations

import io
from dataclasses import replace

from seglab.commands.waiting import Progress, bar, clock, phase, progress_text
from seglab.kinds import RuntimeKind
from seglab.registry import RunStatus
from seglab.views import RunRow

ROW = RunRow(
    run_id="smoke.default.abc123",
    recipe="smoke",
    variant="default",
    status=RunStatus.RUNNING,
    host="local",
    gpus=(),
    where="local:cpu",
    members=(),
    runtime=RuntimeKind.PROCESS,
    iteration=16,
    total_iterations=64,
    progress=0.25,
    eta_s=95.0,
    last_loss=0.91234,
    best_miou=None,
    img_per_s=3.25,
    age_s=30.0,
    exit_code=None,
    run_dir="/runs/smoke.default.abc123",
    message=None,
)


def test_progress_text_says_iteration_loss_speed_and_eta() -> None:
    assert progress_text(ROW) == "running · iter 16/64 · loss 0.9123 · 3.2 img/s · ETA 1:35"
    evaluated = replace(ROW, best_miou=0.5)
    assert "best mIoU 0.5000" in progress_text(evaluated)


def test_phases_before_the_first_iteration_and_after_the_last() -> None:
    assert phase(replace(ROW, iteration=None)) == "starting the trainer"
    final = replace(ROW, iteration=64, eta_s=0.0)
    assert phase(final) == "final evaluation, checkpoints and exports"
    assert "ETA" not in progress_text(final)
    done = replace(ROW, status=RunStatus.FINISHED, iteration=64, eta_s=None)
    assert progress_text(done).startswith("finished · iter 64/64")


def test_clock_and_bar() -> None:
    assert clock(None) == "-"
    assert clock(59.6) == "1:00"
    assert clock(3723) == "1:02:03"
    assert bar(0.5, 10) == "█████░░░░░"
    assert bar(None, 4) == "░░░░"
    assert bar(2.0, 4) == "████"


def test_a_terminal_gets_one_line_per_run_redrawn_in_place() -> None:
    out = io.StringIO()
    progress = Progress(out, tty=True)
    other = replace(ROW, run_id="smoke.other.def456", progress=1.0, status=RunStatus.FINISHED)
    progress.update([ROW, other])
    progress.update([replace(ROW, iteration=20, progress=0.3125), other])
    text = out.getvalue()
    # The second frame moves the cursor back over the two lines of the first.
    first, second = text.split("\x1b[2F")
    assert first.count("\n") == 2 and second.count("\n") == 2
    assert "iter 20/64" in second and "████████████████████" in second


def test_plain_output_prints_on_change_and_at_most_every_thirty_seconds() -> None:
    out = io.StringIO()
    progress = Progress(out, tty=False)
    progress.update([ROW], now=0.0)
    progress.update([replace(ROW, iteration=17)], now=5.0)  # only progress: quiet
    progress.update([replace(ROW, iteration=20, best_miou=0.4)], now=6.0)  # an evaluation
    progress.update([replace(ROW, iteration=30, best_miou=0.4)], now=40.0)  # 34 s later
    progress.update([replace(ROW, status=RunStatus.FINISHED, best_miou=0.4)], now=41.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert "\x1b" not in out.getvalue()
    assert "best mIoU 0.4000" in lines[1] and "iter 30/64" in lines[2]
    assert lines[3].startswith("smoke.default.abc123: finished")
