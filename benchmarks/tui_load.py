"""The dashboard under load: CPU share, peak RSS and event-loop lag of a headless app.

Modes, each in its own process (so peak RSS is its own) with its own workstation:

- ``load``: 8 hosts x 8 GPUs whose states change every second (with history for the
  sparklines), 32 real running runs (process runtime, each appending one train event a
  second to its events.jsonl, 1,000 events of history) refreshed every second, and 1,000
  log lines/s written into the visible log pane;
- ``idle32``: the same 32 running runs, one GPU-less host, no log lines (an idle screen);
- ``done1000``: 1,000 finished runs in the registry, nothing running, no log lines;
- ``baseline``: one GPU-less host, no runs, no log lines.

    .venv/bin/python benchmarks/tui_load.py --seconds 30

Targets (issues 7 and 15): ``load`` at most 10 % of one core, at most 150 MB peak RSS, p99
lag <= 50 ms; ``idle32`` and ``done1000`` under 5 % of a core each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HOSTS = 8
GPUS = 8
RUNS = 32
HISTORY = 1000  # events each running run has written before the measurement
FINISHED = 1000
MODES = ("baseline", "load", "idle32", "done1000")
LINES_PER_S = 1000
TICK_S = 0.01  # the lag probe's sleep


def _isolate() -> None:
    home = Path(tempfile.mkdtemp(prefix="seglab-tui-bench-"))
    for var, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_CACHE_HOME", "cache"),
    ):
        (home / sub).mkdir(parents=True)
        os.environ[var] = str(home / sub)
    os.environ["DOCKER_HOST"] = "unix:///nonexistent/seglab-bench.sock"  # no engine to list


def _states(step: int, loaded: bool) -> list[Any]:
    from seglab.telemetry.hostinfo import local_host_sample
    from seglab.telemetry.sample import GpuSample, HostState, HostStatus, ProcessSample

    if not loaded:
        return [
            HostState(
                "local",
                "none",
                HostStatus.NO_GPU,
                message="no NVIDIA GPU",
                host_sample=local_host_sample(),
                updated=time.time(),
            )
        ]
    states = []
    for h in range(HOSTS):
        gpus = []
        for g in range(GPUS):
            util = float((step * 7 + h * 11 + g * 13) % 101)
            uuid = f"GPU-{h:04d}{g:04d}-bench"
            gpus.append(
                GpuSample(
                    host=f"gpu{h}",
                    index=g,
                    uuid=uuid,
                    name="NVIDIA H100 80GB HBM3",
                    utilization_gpu=util,
                    memory_used_mib=800.0 * util,
                    memory_total_mib=81559.0,
                    temperature_c=30 + util / 2,
                    power_draw_w=70 + 6 * util,
                    power_limit_w=700.0,
                    time=time.time(),
                    processes=(
                        ProcessSample(
                            100 + g,
                            uuid,
                            1024.0,
                            "python",
                            run_id=_run_id((h * GPUS + g) % RUNS),
                        ),
                    ),
                )
            )
        states.append(
            HostState(
                f"gpu{h}",
                "nvidia-smi",
                HostStatus.OK,
                gpus=tuple(gpus),
                updated=time.time(),
                driver_version="590.48.01",
            )
        )
    return states


def _run_id(i: int) -> str:
    return f"bench.v{i}.{i:06x}"  # as live_runs names them


async def _measure(seconds: float, mode: str) -> dict[str, Any]:
    import live_runs

    loaded = mode == "load"
    running = (
        live_runs.start_runs(RUNS, HISTORY, 1.0, "bench") if mode in ("load", "idle32") else []
    )
    if mode == "done1000":
        live_runs.seed_finished(FINISHED)
    try:
        return await _run_app(seconds, mode, loaded)
    finally:
        live_runs.stop_runs(running)


async def _run_app(seconds: float, mode: str, loaded: bool) -> dict[str, Any]:
    import psutil

    from seglab.telemetry.history import HistoryStore
    from seglab.tui.app import SeglabApp
    from seglab.tui.feeds import FixedFeed
    from seglab.tui.log_pane import LogPane

    history = HistoryStore()
    feed = FixedFeed(_states(0, loaded), history)
    app = SeglabApp(layout="default", feed=feed, follow_logs=False)
    lags: list[float] = []
    fed = 0
    stop = threading.Event()

    async with app.run_test(size=(200, 60)) as pilot:
        await pilot.pause(3.0)  # first polls done, chart mounted: measure the steady state
        pane = app.query_one("#logpane", LogPane)

        def feeder() -> None:  # a log stream: 1,000 lines/s in 10 ms batches
            nonlocal fed
            batch = LINES_PER_S // 100
            next_at = time.perf_counter()
            while not stop.is_set():
                pane.feed(
                    [
                        f"iter {fed + k}/100000 epoch 3 loss 0.4321 lr 0.001 grad 1.234 12.5 img/s"
                        for k in range(batch)
                    ]
                )
                fed += batch
                next_at += 0.01
                time.sleep(max(0.0, next_at - time.perf_counter()))

        async def telemetry() -> None:  # 8 x 8 GPUs at 1 Hz
            step = 0
            while True:
                step += 1
                feed.current = _states(step, loaded)
                for state in feed.current:
                    for gpu in state.gpus:
                        history.push(gpu)
                await asyncio.sleep(1.0)

        async def probe() -> None:
            while True:
                start = time.perf_counter()
                await asyncio.sleep(TICK_S)
                lags.append(time.perf_counter() - start - TICK_S)

        proc = psutil.Process()
        tasks = [asyncio.create_task(telemetry()), asyncio.create_task(probe())]
        thread = threading.Thread(target=feeder, daemon=True)
        if loaded:
            thread.start()
        cpu0, wall0 = sum(proc.cpu_times()[:2]), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu1, wall1 = sum(proc.cpu_times()[:2]), time.perf_counter()
        stop.set()
        for task in tasks:
            task.cancel()
        shown = len(pane.lines_shown())
        rows = app.query_one("#runs").row_count  # type: ignore[attr-defined]
        await pilot.press("q")
    lags.sort()
    return {
        "mode": mode,
        "seconds": wall1 - wall0,
        "cpu_share": (cpu1 - cpu0) / (wall1 - wall0),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "lag_p50_ms": 1000 * statistics.median(lags),
        "lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))],
        "lag_max_ms": 1000 * lags[-1],
        "lines_fed": fed,
        "lines_in_pane": shown,
        "runs_in_table": rows,
        "gpus": HOSTS * GPUS if loaded else 0,
    }


def _child(mode: str, seconds: float) -> None:
    _isolate()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    result = asyncio.run(_measure(seconds, mode))
    print(json.dumps(result))


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per mode")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        _child(args.mode, args.seconds)
        return 0
    results = {}
    for mode in MODES:
        out = subprocess.run(
            [sys.executable, __file__, "--mode", mode, "--seconds", str(args.seconds)],
            capture_output=True,
            text=True,
            check=True,
        )
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    base, load = results["baseline"], results["load"]
    print(
        f"headless dashboard, 200x60, default layout, {args.seconds:.0f} s per mode, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"{'mode':<9} {'cpu %core':>9} {'peak MB':>8} {'lag p50':>8} {'lag p99':>8} "
        f"{'lag max':>8} {'lines fed':>10} {'in pane':>8} {'runs':>5} {'GPUs':>5}"
    )
    for r in results.values():
        print(
            f"{r['mode']:<9} {100 * r['cpu_share']:>9.1f} {r['peak_rss_mb']:>8.1f} "
            f"{r['lag_p50_ms']:>7.1f}ms {r['lag_p99_ms']:>7.1f}ms {r['lag_max_ms']:>7.1f}ms "
            f"{r['lines_fed']:>10} {r['lines_in_pane']:>8} {r['runs_in_table']:>5} "
            f"{r['gpus']:>5}"
        )

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(
        f"load / baseline: CPU {load['cpu_share'] / max(base['cpu_share'], 1e-9):.1f}x, "
        f"RSS {load['peak_rss_mb'] / base['peak_rss_mb']:.2f}x, "
        f"p99 lag {load['lag_p99_ms'] / max(base['lag_p99_ms'], 1e-9):.1f}x"
    )
    print(
        f"CPU {100 * load['cpu_share']:.1f} % of a core (target <= 10 %: "
        f"{verdict(load['cpu_share'] <= 0.10)}); peak RSS {load['peak_rss_mb']:.0f} MB "
        f"(target <= 150 MB: {verdict(load['peak_rss_mb'] <= 150)}); p99 lag "
        f"{load['lag_p99_ms']:.1f} ms (target <= 50 ms: {verdict(load['lag_p99_ms'] <= 50)})"
    )
    for mode in ("idle32", "done1000"):
        share = results[mode]["cpu_share"]
        print(f"{mode}: {100 * share:.1f} % of a core (target < 5 %: {verdict(share < 0.05)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
