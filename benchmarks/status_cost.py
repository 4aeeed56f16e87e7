"""What checking on a run costs as it grows: `seglab ps --json` with one running run of
100 events against one of 100,000 events, each a real process appending an event a second.

Two isolated workstations (XDG dirs of their own), one per size; the first `ps` of each
ingests the history and is not counted; then the two are timed interleaved, ``--rounds``
times each, as whole commands (process start to exit).

    .venv/bin/python benchmarks/status_cost.py --rounds 9

Target (issue 15): the 100k-event run's median within 1.2x of the 100-event run's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEGLAB = [sys.executable, "-m", "seglab"]


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_CACHE_HOME", "cache"),
    ):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    env["DOCKER_HOST"] = "unix:///nonexistent/seglab-bench.sock"  # no engine to list
    return env


def _setup(env: dict[str, str], events: int, prefix: str) -> None:
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import live_runs; "
        f"live_runs.start_runs(1, {events}, 1.0, {prefix!r})"
    )
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)


def _stop(env: dict[str, str], prefix: str) -> None:
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import live_runs; "
        f"live_runs.stop_runs(['{prefix}.v0.000000'])"
    )
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)


def _ps(env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([*SEGLAB, "ps", "--json"], env=env, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=9, help="timed ps calls per size")
    parser.add_argument("--big", type=int, default=100_000, help="events of the long run")
    args = parser.parse_args()
    sizes = {"100 events": 100, f"{args.big:,} events": args.big}
    envs = {}
    with tempfile.TemporaryDirectory(prefix="seglab-status-") as tmp:
        for n, (label, events) in enumerate(sizes.items()):
            envs[label] = _env(Path(tmp) / f"ws{n}")
            _setup(envs[label], events, f"size{n}")
        try:
            first = {label: _ps(env) for label, env in envs.items()}  # ingests the history
            times: dict[str, list[float]] = {label: [] for label in envs}
            for _ in range(args.rounds):
                for label, env in envs.items():
                    times[label].append(_ps(env))
        finally:
            for n, env in enumerate(envs.values()):
                _stop(env, f"size{n}")
    load = os.getloadavg()
    print(
        f"`seglab ps --json`, one running run (process runtime, one event/s appended), "
        f"{args.rounds} interleaved rounds, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(f"{'run':<16} {'first ps':>9} {'median':>8} {'min':>7} {'max':>7}")
    for label, values in times.items():
        print(
            f"{label:<16} {first[label]:>8.3f}s {statistics.median(values):>7.3f}s "
            f"{min(values):>6.3f}s {max(values):>6.3f}s"
        )
    small, big = (statistics.median(v) for v in times.values())
    ratio = big / small
    verdict = "met" if ratio <= 1.2 else "NOT met"
    print(f"long / short: {ratio:.2f}x (target <= 1.2x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
