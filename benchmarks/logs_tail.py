"""`seglab logs --tail` against `tail -n`, on logs whose last line is very long.

Writes logs of several shapes to a temporary folder (a carriage-return progress bar of
SIZE megabytes with no newline at the end, after 1,000 short lines; and a million short
lines), then times, interleaved over several rounds, seglab's reader (``read_lines`` with
``tail``, each line through ``safe_line``, written to /dev/null) and ``tail -n N FILE >
/dev/null``. Prints the median and spread of each and their ratio. seglab prints at most
64 KiB of a line (and a marker counting the rest); ``tail`` prints all of it.

``--before`` also times the reader this one replaced (it grew its buffer by
concatenation and re-split it on every read: quadratic in the line's length), on the
sizes up to 16 MB only.

    .venv/bin/python benchmarks/logs_tail.py --sizes 1 4 16 64 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from seglab.runtime.base import LogCursor, LogLine
from seglab.runtime.logfile import read_lines
from seglab.safetext import safe_line

MB = 1024 * 1024


def _write_progress_log(path: Path, megabytes: int) -> None:
    bar = b"\r 42%|########        | 4200/10000 [01:02<01:28, 67.7it/s]"
    with open(path, "wb") as handle:
        handle.write(b"".join(b"epoch 1 iter %d loss 0.5\n" % n for n in range(1000)))
        handle.write(bar * (megabytes * MB // len(bar)))


def _write_short_lines(path: Path, count: int) -> None:
    with open(path, "wb") as handle:
        for start in range(0, count, 10000):
            end = min(count, start + 10000)
            handle.write(b"".join(b"epoch 1 iter %d loss 0.5\n" % n for n in range(start, end)))


def _seglab(path: Path, lines: int) -> None:
    with open(os.devnull, "w", encoding="utf-8") as sink:
        for line in read_lines(path, lambda: False, follow=False, since=None, tail=lines, poll=1):
            sink.write(safe_line(line.text) + "\n")


def _tail(path: Path, lines: int) -> None:
    with open(os.devnull, "wb") as sink:
        subprocess.run(["tail", "-n", str(lines), str(path)], stdout=sink, check=True)


def _before_lines(path: Path, lines: int) -> Iterator[LogLine]:
    """The replaced reader: tail by growing one buffer, lines by re-splitting it."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        pos, data = size, b""
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(65536, pos)
            pos -= step
            handle.seek(pos)
            data = handle.read(step) + data
        cut = len(data) - 1 if data.endswith(b"\n") else len(data)
        for _ in range(lines):
            cut = data.rfind(b"\n", 0, cut)
            if cut < 0:
                break
        offset = pos + cut + 1
        handle.seek(offset)
        pending = b""
        while chunk := handle.read(65536):
            pending += chunk
            *whole, pending = pending.split(b"\n")
            for line in whole:
                offset += len(line) + 1
                yield LogLine(line.decode("utf-8", "replace"), LogCursor(offset=offset))
        if pending:
            yield LogLine(pending.decode("utf-8", "replace"), LogCursor(offset=offset))


def _before(path: Path, lines: int) -> None:
    with open(os.devnull, "w", encoding="utf-8") as sink:
        for line in _before_lines(path, lines):
            sink.write(line.text + "\n")


def _time(run: Callable[[Path, int], None], path: Path, lines: int) -> float:
    start = time.perf_counter()
    run(path, lines)
    return time.perf_counter() - start


def _report(label: str, times: dict[str, list[float]]) -> None:
    base = statistics.median(times["tail -n"])
    for name, values in times.items():
        median = statistics.median(values)
        spread = max(values) - min(values)
        print(
            f"{label:<34} {name:<10} median {median * 1000:9.1f} ms  "
            f"spread {spread * 1000:7.1f} ms  x tail {median / base:6.2f}"
        )


def main() -> None:
    """Time each shape and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64], metavar="MB")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tail", type=int, default=10, metavar="N", help="lines asked for")
    parser.add_argument("--before", action="store_true", help="also time the old reader")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        shapes: list[tuple[str, Path, bool]] = []
        for megabytes in args.sizes:
            path = Path(folder) / f"progress-{megabytes}.log"
            _write_progress_log(path, megabytes)
            shapes.append((f"last line {megabytes} MB, tail {args.tail}", path, megabytes <= 16))
        short = Path(folder) / "short.log"
        _write_short_lines(short, 1_000_000)
        shapes.append((f"1M short lines, tail {args.tail}", short, True))
        shapes.append(("1M short lines, tail 100000", short, True))
        for label, path, before in shapes:
            lines = 100000 if label.endswith("100000") else args.tail
            runners: dict[str, Callable[[Path, int], None]] = {
                "tail -n": _tail,
                "seglab": _seglab,
            }
            if args.before and before:
                runners["before"] = _before
            times: dict[str, list[float]] = {name: [] for name in runners}
            for _ in range(args.rounds):  # interleaved: each round runs every reader once
                for name, run in runners.items():
                    times[name].append(_time(run, path, lines))
            _report(label, times)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
