"""Hostile run output: control sequences split across reads, a 1 MB line, a newline-less
stream, and ``tail`` over lines of any length, read by the real log-file reader and shown
by the real log pane."""

from __future__ import annotations

import random
import re
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Static

from seglab.runtime import logfile
from seglab.runtime.base import LogCursor
from seglab.runtime.logfile import read_lines, tail_offset
from seglab.safetext import MAX_LINE_BYTES, SEQUENCE_MARK, cut_marker, safe_line
from seglab.tui.log_pane import LogPane
from tests.tui.pilotlib import sync, wait_until

pytestmark = pytest.mark.faults

UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
HOSTILE = [
    "\x1b]0;pwned\x07title",
    "\x1b]52;c;Y3VybCBldmlsLnNofHNo\x1b\\clipboard",
    "\x1b[2J\x1b[Hcleared",
    "\x1bP+q544e\x1b\\dcs",
    "\x9b31mc1-csi",
    "\x1b_apc unterminated",
]


def _lines(path: Path, **kwargs: Any) -> list[str]:
    options: dict[str, Any] = {"follow": False, "since": None, "tail": None, "poll": 0.01}
    options.update(kwargs)
    return [line.text for line in read_lines(path, lambda: False, **options)]


def test_sequences_split_across_reads_never_reach_the_sink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "train.log"
    path.write_bytes("\n".join(["ok", *HOSTILE, "after"]).encode() + b"\n")
    for size in (1, 2, 3, 5, 7, 64):  # every split point of every sequence
        monkeypatch.setattr(logfile, "_READ", size)
        lines = _lines(path)
        assert lines[0] == "ok" and lines[-1] == "after"
        shown = [safe_line(line) for line in lines]
        for line in shown:
            assert UNSAFE.search(line) is None, line
        assert shown[1:-1] == [
            f"{SEQUENCE_MARK}title",
            f"{SEQUENCE_MARK}clipboard",
            f"{SEQUENCE_MARK}{SEQUENCE_MARK}cleared",
            f"{SEQUENCE_MARK}dcs",
            f"{SEQUENCE_MARK}c1-csi",
            SEQUENCE_MARK,
        ]


def test_a_one_megabyte_line_is_cut_with_its_count_and_the_next_line_is_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "train.log"
    big = 1024 * 1024
    path.write_bytes(b"before\n" + b"q" * big + b"\nafter\n")
    lines = list(read_lines(path, lambda: False, follow=False, since=None, tail=None, poll=0.01))
    assert [line.text for line in lines] == [
        "before",
        "q" * MAX_LINE_BYTES + cut_marker(big - MAX_LINE_BYTES),
        "after",
    ]
    assert lines[1].cursor.offset == len("before\n") + big + 1  # the cursor skips all of it
    resumed = _lines(path, since=LogCursor(offset=lines[1].cursor.offset))
    assert resumed == ["after"]


def test_a_newline_less_stream_is_read_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    path.write_bytes(b"")
    total = 48 * 1024 * 1024
    running = threading.Event()
    running.set()

    def write() -> None:
        block = b"\r 42%|####      | 4200/10000" * 2048
        with open(path, "ab") as handle:
            written = 0
            while written < total:
                handle.write(block)
                handle.flush()
                written += len(block)
        running.clear()

    tracemalloc.start()
    writer = threading.Thread(target=write)
    writer.start()
    got = [
        line.text
        for line in read_lines(path, running.is_set, follow=True, since=None, tail=None, poll=0.001)
    ]
    writer.join()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    (line,) = got
    written = path.stat().st_size
    assert line.endswith(cut_marker(written - MAX_LINE_BYTES))
    assert peak < 4 * 1024 * 1024, f"the reader held {peak} bytes"


def _reference_tail(data: bytes, count: int) -> int:
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    if count <= 0:
        return len(data)
    kept = lines[-count:]
    return len(data) - len(b"\n".join(kept)) - (1 if data.endswith(b"\n") else 0)


def test_tail_offset_matches_a_plain_split_for_any_line_lengths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(15)
    path = tmp_path / "train.log"
    for block in (1, 3, 16, 65536):
        monkeypatch.setattr(logfile, "_READ", block)
        for _ in range(150):
            lengths = [rng.choice((0, 1, 5, 40, 300)) for _ in range(rng.randrange(0, 12))]
            data = b"\n".join(b"x" * n for n in lengths)
            if rng.random() < 0.5:
                data += b"\n"
            path.write_bytes(data)
            for count in range(0, len(lengths) + 3):
                assert tail_offset(path, count) == _reference_tail(data, count), (
                    block,
                    lengths,
                    count,
                )


def test_tail_of_a_log_ending_in_one_huge_line(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    huge = b"\r progress" * (800 * 1024)  # no newline: the run is still writing
    with open(path, "wb") as handle:
        handle.write(b"".join(b"line %d\n" % n for n in range(1000)))
        handle.write(huge)
    assert _lines(path, tail=2) == [
        "line 999",
        huge[:MAX_LINE_BYTES].decode() + cut_marker(len(huge) - MAX_LINE_BYTES),
    ]
    assert _lines(path, tail=3)[0] == "line 998"


class _PaneApp(App[None]):
    def compose(self) -> ComposeResult:
        yield LogPane(id="logpane")


@sync
async def test_the_log_pane_shows_hostile_lines_as_safe_text() -> None:
    app = _PaneApp()
    async with app.run_test(size=(120, 30)) as pilot:
        pane = app.query_one("#logpane", LogPane)
        pane.feed([*HOSTILE, "z" * (200 * 1024), "\x1b[31mred\x1b[0m plain"])
        shown = await wait_until(pilot, pane.lines_shown, 5, "the log lines")
        assert len(shown) == len(HOSTILE) + 2
        for line in shown:
            assert UNSAFE.search(line) is None, line
        assert shown[-2].endswith(cut_marker(200 * 1024 - MAX_LINE_BYTES))
        assert shown[-1] == f"{SEQUENCE_MARK}red{SEQUENCE_MARK} plain"
        pane.report("log gone: \x1b]0;x\x07 [bold]not markup[/bold]")
        await pilot.pause(0.5)
        status = str(app.query_one("#log-status", Static).render())
        assert "\x1b" not in status and "[bold]not markup[/bold]" in status
