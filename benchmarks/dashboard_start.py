"""How soon the dashboard shows something: its first frame, and its GPU rows.

`seglab` (no arguments) in a real terminal: a private tmux server, 120x36, a fresh
workstation (isolated XDG dirs) whose local GPUs are played by the stand-in nvidia-smi
(tests/standin, the H100 capture, 2 GPUs) first on PATH. The screen is read every 10 ms
from the moment the session starts; the first frame is the dashboard's header line, the
GPU rows are the stand-in's GPU name in the hosts panel. `q` ends each round.

    .venv/bin/python benchmarks/dashboard_start.py --rounds 5

Targets (issue 15), on an idle two-core machine: first frame <= 0.5 s, GPU rows <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STANDIN_DIR = REPO / "tests" / "standin"
GPU_TEXT = "H100"  # in the hosts panel once the first sample is shown


def _screen(tmux: list[str]) -> str:
    out = subprocess.run(
        [*tmux, "capture-pane", "-p", "-t", "bench"], capture_output=True, text=True, check=False
    )
    return out.stdout


def one_round(home: Path, limit_s: float) -> tuple[float | None, float | None]:
    """(first frame s, GPU rows s) of one start; None when not seen within ``limit_s``."""
    env = dict(os.environ, TERM="xterm-256color", SEGLAB_STANDIN_GPUS="2")
    for var, sub in (("XDG_CONFIG_HOME", "c"), ("XDG_STATE_HOME", "s"), ("XDG_DATA_HOME", "d")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    env["DOCKER_HOST"] = "unix:///nonexistent/seglab-bench.sock"
    env["PATH"] = f"{STANDIN_DIR}:{env['PATH']}"
    tmux = ["tmux", "-L", f"seglab-bench-{os.getpid()}-{home.name}", "-f", os.devnull]
    command = f"cd {REPO} && exec {sys.executable} -m seglab"
    first = gpus = None
    start = time.perf_counter()
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "bench", "-x", "120", "-y", "36", command],
        check=True,
        env=env,
    )
    try:
        while gpus is None and time.perf_counter() - start < limit_s:
            lines = _screen(tmux).splitlines()
            now = time.perf_counter() - start
            if first is None and lines and "seglab" in lines[0] and "▦" in lines[0]:
                first = now
            if first is not None and any(GPU_TEXT in line for line in lines):
                gpus = now
            time.sleep(0.01)
        subprocess.run([*tmux, "send-keys", "-t", "bench", "q"], check=False)
        time.sleep(0.5)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)
    return first, gpus


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--limit", type=float, default=15.0, help="seconds to wait per round")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("tmux is not installed", file=sys.stderr)
        return 2
    firsts: list[float] = []
    rows: list[float] = []
    missed = 0
    with tempfile.TemporaryDirectory(prefix="seglab-dash-") as tmp:
        for n in range(args.rounds):
            first, gpus = one_round(Path(tmp) / str(n), args.limit)
            if first is None or gpus is None:
                missed += 1
                continue
            firsts.append(first)
            rows.append(gpus)
    load = os.getloadavg()
    print(
        f"`seglab` in tmux 120x36, stand-in nvidia-smi (2 x H100), {args.rounds} rounds, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    if missed:
        print(f"{missed} round(s) did not reach the GPU rows within {args.limit:.0f} s")
    for label, values, target in (("first frame", firsts, 0.5), ("GPU rows", rows, 1.0)):
        if values:
            median = statistics.median(values)
            verdict = "met" if median <= target else "NOT met"
            print(
                f"{label:<12} median {median:.2f} s (min {min(values):.2f}, max "
                f"{max(values):.2f}); target <= {target} s on an idle machine: {verdict}"
            )
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
