"""The host queue runner: its CPU and memory, and the delay from a GPU freeing to the
next queued run starting.

Submits a grid of tiny CPU variants to `local` with ONE stand-in GPU (process runtime),
so one runs and the rest wait in the host's queue; the workstation command returns at
once and the runner (`python -m seglab.hostqueue`) does the rest. While it lives, its
/proc/PID/stat (user+system CPU) and RSS are sampled every 0.5 s. Reported:

- CPU % of one core while waiting (samples more than 2 s from any start) and around
  starts (within 2 s of a `started` journal line), and peak RSS;
- delay per hand-over, at the default 1 s poll, from the run before to the `started`
  journal line of the next: from its process's exit (its `exit_code` file written: the
  GPU is free from then) and from its trainer's `end` event (which comes before the
  trainer's own teardown).

    .venv/bin/python benchmarks/host_queue.py [--recipe tests/fixtures/recipes/tiny-six.yaml]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seglab.hostqueue.store import HostQueue
from seglab.runtime.procwrap import EXIT_FILE

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _cpu_and_rss(pid: int) -> tuple[float, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK, int(fields[21]) * PAGE


def main() -> int:
    """Run the measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "tests/fixtures/recipes/tiny-six.yaml"))
    args = parser.parse_args()
    load = os.getloadavg()
    home = Path(tempfile.mkdtemp(prefix="seglab-hq-bench-"))
    env = dict(os.environ)
    for var in ("CONFIG", "STATE", "DATA", "CACHE"):
        env[f"XDG_{var}_HOME"] = str(home / var.lower())
    env |= {
        "SEGLAB_STANDIN_PYTHON": sys.executable,
        "SEGLAB_STANDIN_CAPTURE": "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt",
        "SEGLAB_STANDIN_GPUS": "1",
        "SEGLAB_STANDIN_PHASE": "idle",
    }
    runs = home / "runs"
    hosts = home / "config" / "seglab" / "hosts.yaml"
    hosts.parent.mkdir(parents=True)
    hosts.write_text(
        "hosts:\n  local:\n    telemetry: nvidia-smi\n"
        f"    nvidia_smi: {REPO / 'tests/standin/nvidia-smi'}\n    runs_root: {runs}\n"
    )
    argv = [sys.executable, "-m", "seglab", "run", args.recipe, "--on", "local"]
    subprocess.run([*argv, "--runtime", "process"], env=env, cwd=REPO, check=True)
    queue = HostQueue(runs)
    while not queue.pid_file.exists():  # the runner starts detached
        time.sleep(0.05)
    pid = int(queue.pid_file.read_text())
    samples: list[tuple[float, float, int]] = []
    while (now := _cpu_and_rss(pid)) is not None and queue.pid_file.exists():
        samples.append((time.time(), *now))
        time.sleep(0.5)
    starts = [e["time"] for e in queue.journal() if e["kind"] == "started"]
    waiting: list[float] = []
    starting: list[float] = []
    for (t0, c0, _), (t1, c1, _) in itertools.pairwise(samples):
        share = 100 * (c1 - c0) / (t1 - t0)
        near = any(abs(t1 - s) < 2 or abs(t0 - s) < 2 for s in starts)
        (starting if near else waiting).append(share)
    ends = []
    for path in runs.glob("*/events.jsonl"):
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
        ends.append(records[-1]["time"])
    exits = [path.stat().st_mtime for path in runs.glob(f"*/{EXIT_FILE}")]
    print(f"load average before and after: {load} -> {os.getloadavg()}")
    print(f"runner lifetime {samples[-1][0] - samples[0][0]:.0f} s, {len(starts)} runs started")
    print(f"CPU waiting: mean {statistics.fmean(waiting):.1f} % of a core, max {max(waiting):.1f}")
    if starting:
        print(
            f"CPU around starts: mean {statistics.fmean(starting):.1f} %, max {max(starting):.1f}"
        )
    print(f"RSS peak {max(s[2] for s in samples) / 2**20:.0f} MiB")
    for what, times in (("process exit (GPU freed)", exits), ("end event", ends)):
        delays = [min(s - t for t in times if t <= s) for s in starts if any(t <= s for t in times)]
        print(
            f"{what} -> next started: median {statistics.median(delays):.2f} s, "
            f"max {max(delays):.2f} s (n={len(delays)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
