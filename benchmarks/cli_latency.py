"""How long a user waits for a CLI answer: whole commands, process start to exit.

`seglab --version`, `seglab ps --json` and `seglab gpus --json` on a fresh local-only
workstation (isolated XDG dirs, no Docker engine socket, the stand-in nvidia-smi on PATH),
against `python3 -c pass` (the venv's interpreter, no shim) and `docker ps` (when a
docker CLI and engine answer; then also `ps` with that engine as seglab's, which makes
`ps` look for containers of runs the registry lacks), and `ps` (and `ps --all`, which
lists every run) with 10, 1,000 and 10,000 finished runs in the registry, made with the
real Registry API. All commands interleaved, ``--rounds`` times each, after one untimed
warm-up round; median, min and max, the ratio to `python3 -c pass`, and the load average
before and after.

    .venv/bin/python benchmarks/cli_latency.py --rounds 7

Targets (issue 15), on an idle two-core machine: `seglab --version` under 0.1 s,
`seglab ps --json` under 0.3 s with an empty registry and under 0.4 s at 1,000 runs.
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
SEGLAB = str(Path(sys.executable).with_name("seglab"))
STANDIN_DIR = REPO / "tests" / "standin"
SIZES = (10, 1_000, 10_000)
TARGETS = {  # issue 15, on an idle two-core machine
    "seglab --version": 0.1,
    "seglab ps --json": 0.3,
    "seglab ps --json, 1,000 runs": 0.4,
}


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        (home / var.lower()).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / var.lower())
    env["DOCKER_HOST"] = "unix:///nonexistent/seglab-bench.sock"  # local only, no engine
    env["PATH"] = f"{STANDIN_DIR}{os.pathsep}{env['PATH']}"
    return env


def _seed(env: dict[str, str], count: int) -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import live_runs; "
        f"live_runs.seed_finished({count})"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="seglab-cli-") as tmp:
        empty = _env(Path(tmp) / "empty")
        cases: dict[str, tuple[list[str], dict[str, str]]] = {
            "python3 -c pass": ([sys.executable, "-c", "pass"], empty),
        }
        docker_env = dict(os.environ)
        if shutil.which("docker") and docker_env.get("DOCKER_HOST"):
            probe = subprocess.run(
                ["docker", "ps"], env=docker_env, capture_output=True, check=False
            )
            if probe.returncode == 0:
                cases["docker ps"] = (["docker", "ps"], docker_env)
        cases["seglab --version"] = ([SEGLAB, "--version"], empty)
        cases["seglab ps --json"] = ([SEGLAB, "ps", "--json"], empty)
        if "docker ps" in cases:  # the same empty workstation with an engine to look at
            engine = _env(Path(tmp) / "engine") | {"DOCKER_HOST": docker_env["DOCKER_HOST"]}
            cases["seglab ps --json, engine up"] = ([SEGLAB, "ps", "--json"], engine)
        cases["seglab gpus --json"] = ([SEGLAB, "gpus", "--json"], empty)
        for size in SIZES:
            env = _env(Path(tmp) / f"runs{size}")
            _seed(env, size)
            cases[f"seglab ps --json, {size:,} runs"] = ([SEGLAB, "ps", "--json"], env)
            cases[f"seglab ps --all --json, {size:,}"] = ([SEGLAB, "ps", "--all", "--json"], env)
        for argv, env in cases.values():  # warm the page cache and .pyc files
            _time(argv, env)
        times: dict[str, list[float]] = {label: [] for label in cases}
        for _ in range(args.rounds):
            for label, (argv, env) in cases.items():
                times[label].append(_time(argv, env))
    load = " -> ".join(" ".join(f"{v:.2f}" for v in avg) for avg in (before, os.getloadavg()))
    print(
        f"whole commands, {args.rounds} interleaved rounds, {os.cpu_count()} CPUs, "
        f"load average {load}"
    )
    base = statistics.median(times["python3 -c pass"])
    print(f"{'command':<34} {'median':>8} {'min':>7} {'max':>7} {'x python3':>9}")
    for label, values in times.items():
        median = statistics.median(values)
        print(
            f"{label:<34} {median:>7.3f}s {min(values):>6.3f}s {max(values):>6.3f}s "
            f"{median / base:>8.1f}x"
        )
    for label, target in TARGETS.items():
        median = statistics.median(times[label])
        verdict = "met" if median < target else "NOT met"
        print(f"{label}: {median:.3f} s (target under {target} s on an idle machine: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
