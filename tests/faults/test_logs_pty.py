"""`seglab logs` of a run whose output is hostile, read through a real pty: the bytes that
reach the terminal hold no escape sequence, no control but the line ends, and no line
longer than the cap."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from seglab import paths
from seglab.registry import Registry, RunRecord, RunStatus
from seglab.runtime import LaunchSpec
from seglab.runtime.process import ProcessRuntime
from seglab.safetext import MAX_LINE_BYTES

pytestmark = pytest.mark.faults

RUN_ID = "hostile.default.a1b2c3"

# Writes every kind of sequence, a 1 MB line, then a 3 MB newline-less progress bar.
HOSTILE = textwrap.dedent(
    r"""
    import sys
    out = sys.stdout.buffer
    out.write(b"start\n")
    out.write(b"\x1b]0;pwned\x07\x1b]52;c;Y3VybCBldmlsLnNofHNo\x1b\\title and clipboard\n")
    out.write(b"\x1b[2J\x1b[H\x1b[31mred\x1b[0m \x1bP+q544e\x1b\\ \x1b_apc\x1b\\ \xc2\x9b6n\n")
    out.write(b"bell\x07 backspace\x08 nul\x00 del\x7f c1\xc2\x85 bad\xff\n")
    out.write(b"\x1b]8;;http://x.invalid\x07link\x1b]8;;\x07 unterminated \x1b]0;")
    out.write(b"\n")
    out.write(b"q" * (1024 * 1024) + b"\n")
    out.write(b"end\n")
    out.write(b"\r 42%|####      | 4200/10000" * 110000)
    out.flush()
    """
)


def _pty_output(argv: list[str]) -> bytes:
    """Everything ``argv`` writes to a pty it has as stdout and stderr."""
    main, child = pty.openpty()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=child, stderr=child)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert process.wait(timeout=120) == 0, b"".join(chunks)[-2000:]
    return b"".join(chunks)


def _ran(run_id: str, code: str, status: RunStatus) -> None:
    """A process-runtime run of ``code`` that has exited, known to the registry."""
    recipe = run_id.split(".", maxsplit=1)[0]
    runtime = ProcessRuntime(paths.default_runs_root())
    ref = runtime.launch(
        LaunchSpec(
            name=run_id,
            image="unused",
            command=(sys.executable, "-c", code),
            labels={"seglab.run_id": run_id, "seglab.recipe": recipe},
            log_path=paths.default_runs_root() / run_id / "train.log",
        )
    )
    assert runtime.wait(ref, 60) == 0
    with Registry() as registry:
        registry.upsert_run(
            RunRecord(
                run_id=run_id,
                recipe=recipe,
                variant="default",
                host="local",
                runtime="process",
                handle=ref,
                run_dir=str(Path(ref)),
                status=status,
                started_at=time.time(),
            )
        )


def test_logs_puts_only_safe_bytes_on_the_terminal() -> None:
    _ran(RUN_ID, HOSTILE, RunStatus.RUNNING)
    shown = _pty_output([sys.executable, "-m", "seglab", "logs", RUN_ID])
    text = shown.decode("utf-8")  # valid UTF-8, whatever the run wrote
    assert "\x1b" not in text
    assert re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", text) is None
    lines = text.split("\r\n")  # the pty turns each newline into CR LF
    assert lines[0] == "start"
    assert "title and clipboard" in lines[1] and "pwned" not in lines[1]
    assert "red" in lines[2] and "[31m" not in lines[2]
    assert lines[3] == "bell␇ backspace␈ nul␀ del␡ c1␛ bad�"
    assert lines[4] == "␛link␛ unterminated ␛"
    assert lines[5] == "q" * MAX_LINE_BYTES + f"… [{1024 * 1024 - MAX_LINE_BYTES} bytes cut]"
    assert lines[6] == "end"
    assert lines[7].startswith("␍ 42%|####") and lines[7].endswith(" bytes cut]")
    assert all(len(line.encode()) < 4 * MAX_LINE_BYTES for line in lines)


EVENTFUL = textwrap.dedent(
    r"""
    import sys
    print("epoch 1 \x1b]0;title\x07done")
    print('@seglab {"v":1,"kind":"train","seq":1,"time":0,"iter":1}')
    print("bye")
    """
)


def test_logs_hides_event_lines_unless_asked_and_json_keeps_the_raw_text() -> None:
    _ran("eventful.default.d4e5f6", EVENTFUL, RunStatus.FINISHED)

    def logs(*flags: str) -> list[str]:
        argv = [sys.executable, "-m", "seglab", "logs", *flags, "d4e5"]  # a short id
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
        return out.stdout.splitlines()

    assert logs() == ["epoch 1 ␛done", "bye"]
    assert logs("--events")[1].startswith("@seglab ")
    raw = [json.loads(line)["text"] for line in logs("--json", "--events")]
    assert raw[0] == "epoch 1 \x1b]0;title\x07done" and len(raw) == 3
