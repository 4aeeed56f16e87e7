"""CPU cost per GPU sample: one long-lived nvidia-smi stream per host vs spawn-per-poll.

8 hosts x 8 GPUs at 1 Hz (64 GPUs), both modes in the same run, each for --seconds:

- stream: seglab's SmiSource, one `nvidia-smi --query-gpu=... -lms 1000` per host,
  read and parsed line by line (the process list poll is kept out of the window);
- spawn-per-poll: every second, per host, start `nvidia-smi --query-gpu=...` once and
  parse its output with the same parser (what most monitors do).

The GPUs are played by two stand-ins replaying the H100 load capture, each in its own
pass: the Python stand-in (tests/standin), and a compiled one (C, built here with the
system compiler) that prints the same captured CSV with no interpreter start-up, so that
the ratio measures seglab and not Python's start. Printed per pass: workstation-side CPU
(this process) per GPU sample, the CPU of the nvidia-smi processes themselves, and the
ratios. Target (issue 15): the stream's workstation CPU per GPU sample at most half the
spawn-per-poll parser's.

    .venv/bin/python benchmarks/telemetry.py [--seconds 10] [--hosts 8] [--gpus 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seglab.machines import LocalMachine  # noqa: E402
from seglab.telemetry.smi import (  # noqa: E402
    FieldPlan,
    SmiSource,
    parse_csv_table,
    supported_fields,
)

STANDIN = REPO / "tests" / "standin" / "nvidia-smi"


C_STANDIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static const char HELP[] = %s;
static const char TABLE[] = %s;
int main(int argc, char **argv) {
    long ms = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help-query-gpu")) { fputs(HELP, stdout); return 0; }
        if ((!strcmp(argv[i], "-lms") || !strcmp(argv[i], "--loop-ms")) && i + 1 < argc)
            ms = atol(argv[++i]);
    }
    if (ms <= 0) { fputs(TABLE, stdout); return 0; }
    for (;;) { fputs(TABLE, stdout); fflush(stdout); usleep((useconds_t)ms * 1000); }
}
"""


def _c_string(text: str) -> str:
    out = []
    for byte in text.encode():
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\?' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


async def build_compiled(plan: FieldPlan, folder: Path) -> Path:
    """A compiled stand-in that answers ``--help-query-gpu`` and the plan's query (once,
    or every ``-lms`` ms) with what the Python stand-in prints."""
    machine = LocalMachine()
    help_text = (await machine.run([str(STANDIN), "--help-query-gpu"], timeout=30)).stdout
    query = [str(STANDIN), f"--query-gpu={plan.query()}", "--format=csv,noheader,nounits"]
    table = (await machine.run(query, timeout=30)).stdout
    source = folder / "nvidia-smi.c"
    source.write_text(C_STANDIN % (_c_string(help_text), _c_string(table)))
    binary = folder / "nvidia-smi"
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise SystemExit("no C compiler (gcc or cc) for the compiled stand-in")
    subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


async def stream_mode(hosts: int, seconds: float, smi: Path) -> tuple[float, float, int]:
    """(parent CPU s, nvidia-smi CPU s, GPU samples) over the window."""
    sources = [
        SmiSource(
            f"bench{i}",
            LocalMachine(),
            nvidia_smi=str(smi),
            interval=1.0,
            apps_interval=3600.0,
        )
        for i in range(hosts)
    ]
    tasks = [asyncio.create_task(source.run()) for source in sources]
    try:
        await asyncio.gather(*(source.wait_ready(30) for source in sources))
        await asyncio.sleep(1.5)  # past the first process-list poll
        children = [psutil.Process(s.stream_pid) for s in sources if s.stream_pid]
        child_before = sum(_cpu(p) for p in children)
        samples_before = sum(s.samples_total for s in sources)
        cpu_before = time.process_time()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - cpu_before
        samples = sum(s.samples_total for s in sources) - samples_before
        child = sum(_cpu(p) for p in children) - child_before
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return cpu, child, samples


async def spawn_mode(
    hosts: int, seconds: float, plan: FieldPlan, smi: Path
) -> tuple[float, float, int]:
    """(parent CPU s, nvidia-smi CPU s, GPU samples) when spawning one process per poll."""
    executor = LocalMachine()
    argv = [str(smi), f"--query-gpu={plan.query()}", "--format=csv,noheader,nounits"]
    samples = 0

    async def poll(host: str) -> int:
        result = await executor.run(argv, timeout=30)
        return len(parse_csv_table(plan, result.stdout, host, time.time()))

    await asyncio.gather(*(poll(f"bench{i}") for i in range(hosts)))  # warm caches
    children_before = _children_cpu()
    cpu_before = time.process_time()
    loop = asyncio.get_running_loop()
    start = loop.time()
    tick = 0
    while loop.time() - start < seconds:
        counts = await asyncio.gather(*(poll(f"bench{i}") for i in range(hosts)))
        samples += sum(counts)
        tick += 1
        await asyncio.sleep(max(0.0, start + tick - loop.time()))
    cpu = time.process_time() - cpu_before
    return cpu, _children_cpu() - children_before, samples


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per host")
    args = parser.parse_args()
    os.environ.update(
        SEGLAB_STANDIN_PYTHON=sys.executable,
        SEGLAB_STANDIN_GPUS=str(args.gpus),
        SEGLAB_STANDIN_PHASE="load",
    )
    probe = await LocalMachine().run([str(STANDIN), "--help-query-gpu"], timeout=30)
    plan = FieldPlan.choose(supported_fields(probe.stdout))
    gpus = args.hosts * args.gpus
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"{args.hosts} hosts x {args.gpus} GPUs = {gpus} GPUs at 1 Hz, "
        f"{args.seconds:g} s per mode, {len(plan.fields)} fields per sample, "
        f"{psutil.cpu_count()} CPUs, load average {load}"
    )
    with tempfile.TemporaryDirectory(prefix="seglab-smi-") as tmp:
        compiled = await build_compiled(plan, Path(tmp))
        for label, smi in (("Python stand-in", STANDIN), ("compiled stand-in", compiled)):
            print(f"-- {label}")
            await _pass(args.hosts, args.seconds, plan, smi)


async def _pass(hosts: int, seconds: float, plan: FieldPlan, smi: Path) -> None:
    s_cpu, s_child, s_n = await stream_mode(hosts, seconds, smi)
    p_cpu, p_child, p_n = await spawn_mode(hosts, seconds, plan, smi)

    def per(cpu: float, n: int) -> float:
        return 1000.0 * cpu / max(n, 1)

    rows = [
        ("stream (seglab)", s_n, per(s_cpu, s_n), per(s_child, s_n), per(s_cpu + s_child, s_n)),
        ("spawn-per-poll", p_n, per(p_cpu, p_n), per(p_child, p_n), per(p_cpu + p_child, p_n)),
    ]
    print(
        f"{'mode':<18}{'samples':>8}{'ws ms/sample':>14}{'smi ms/sample':>15}"
        f"{'total ms/sample':>17}"
    )
    for name, n, ws, smi_ms, total in rows:
        print(f"{name:<18}{n:>8}{ws:>14.4f}{smi_ms:>15.4f}{total:>17.4f}")
    ws_ratio = rows[0][2] / rows[1][2] if rows[1][2] else float("inf")
    total_ratio = rows[1][4] / rows[0][4] if rows[0][4] else float("inf")
    print(
        f"stream / spawn-per-poll, workstation CPU per sample: {ws_ratio:.2f}x "
        f"(target <= 0.5x: {'met' if ws_ratio <= 0.5 else 'NOT met'})"
    )
    print(f"spawn-per-poll / stream, total CPU incl. nvidia-smi: {total_ratio:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
