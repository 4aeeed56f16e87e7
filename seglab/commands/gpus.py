"""`seglab gpus`: an nvidia-smi/gpustat-like view of the GPUs of every configured host."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from seglab.commands import add_command, print_json

if TYPE_CHECKING:
    from seglab.telemetry.live import LiveTelemetry
    from seglab.telemetry.sample import GpuSample, HostState

DESCRIPTION = """\
Show the GPUs of every host in hosts.yaml (and this machine): utilisation and memory
bars, temperature, power, and who uses each GPU (seglab run ids, or user: command for
processes seglab did not start).

Each host is read the way its hosts.yaml entry says (`telemetry: auto | nvml |
nvidia-smi`, `nvidia_smi: PATH`). A host whose telemetry fails is shown with its
status (degraded, error, no_gpu) and the reason instead of numbers.

--json prints a list of hosts, each with status, message, host_sample (CPU/RAM) and
gpus (index, uuid, name, utilization_gpu %, memory_used_mib, memory_total_mib,
temperature_c, power_draw_w, power_limit_w, fan_percent, ... and processes); a value
the driver does not report is null. With --watch, --json prints one such list per
line (JSON Lines) at every refresh.

Examples:
  seglab gpus
  seglab gpus --host lab1 --json
  seglab gpus --watch
"""


def register(subparsers: Any) -> None:
    """Add the `gpus` command."""
    parser = add_command(subparsers, "gpus", "show GPU use on every host", DESCRIPTION)
    parser.add_argument("--host", metavar="H", help="only this host (a name from hosts.yaml)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--watch", action="store_true", help="keep refreshing until Ctrl-C or SIGTERM (live view)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="seconds to wait for each host's first reading (default 15)",
    )
    parser.set_defaults(func=_gpus)


def _gpus(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        from seglab.commands import CommandError

        raise CommandError("--timeout must be a positive number of seconds")
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()  # SIGTERM ends --watch like Ctrl-C, but with exit status 0
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with open_telemetry(args.host) as telemetry:
        states = await telemetry.wait_ready(args.timeout)
        _show(states, args.json, args.watch, clear=False)
        while args.watch and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _refresh_interval(telemetry))
            if not stop.is_set():
                _show(telemetry.states(), args.json, args.watch, clear=True)
    return 0


@contextlib.asynccontextmanager
async def open_telemetry(only: str | None) -> AsyncIterator[LiveTelemetry]:
    """The workstation's telemetry of every inventory host (or the one named), remote ones
    over the workstation's SSH connections."""
    from seglab.workstation import Workstation

    workstation = Workstation()
    try:
        telemetry = workstation.telemetry([only] if only else None)
        try:
            await telemetry.start()
            yield telemetry
        finally:
            await telemetry.close()
    finally:
        workstation.close()


def _refresh_interval(telemetry: LiveTelemetry) -> float:
    intervals = [getattr(s, "interval", 1.0) for s in telemetry.telemetry.sources.values()]
    return max(0.2, min(intervals, default=1.0))


def _show(states: list[HostState], as_json: bool, watch: bool, clear: bool) -> None:
    if as_json:
        if watch:  # JSON Lines: one compact document per refresh
            print(json.dumps([s.to_dict() for s in states], allow_nan=False), flush=True)
        else:
            print_json([s.to_dict() for s in states])
        return
    text = render(states)
    if clear and sys.stdout.isatty():
        text = "\x1b[H\x1b[2J" + text
    print(text, flush=True)


def render(states: list[HostState]) -> str:
    """The human table: a line per host, then a line per GPU."""
    lines = []
    for state in states:
        lines.append(_host_line(state))
        lines.extend(_gpu_line(gpu) for gpu in state.gpus)
    return "\n".join(lines)


def bar(fraction: float | None, width: int = 10) -> str:
    """A text bar for a 0-1 fraction (blank dots when unknown)."""
    if fraction is None:
        return "·" * width
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def _num(value: float | None, fmt: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def _host_line(state: HostState) -> str:
    head = f"{state.host} [{state.source}] {state.status.value}"
    if state.driver_version:
        head += f"  driver {state.driver_version}"
    if state.host_sample is not None:
        hs = state.host_sample
        used = _num(hs.memory_used_mib and hs.memory_used_mib / 1024, ".1f")
        total = _num(hs.memory_total_mib and hs.memory_total_mib / 1024, ".1f")
        head += f"  cpu {_num(hs.cpu_percent, '.0f', '%')}  load {_num(hs.load_1m, '.1f')}"
        head += f"  ram {used}/{total} GiB"
    if state.message:
        head += f"  ({state.message})"
    return head


def _gpu_line(gpu: GpuSample) -> str:
    util = gpu.utilization_gpu
    memory = f"{_num(gpu.memory_used_mib, '.0f')}/{_num(gpu.memory_total_mib, '.0f')} MiB"
    power = f"{_num(gpu.power_draw_w, '.0f')}/{_num(gpu.power_limit_w, '.0f')} W"
    owners = ", ".join(f"{p.owner} ({_num(p.used_memory_mib, '.0f')} MiB)" for p in gpu.processes)
    if gpu.mig_instances:
        owners = f"MIG x{len(gpu.mig_instances)}" + (f"; {owners}" if owners else "")
    return (
        f"  [{gpu.index}] {(gpu.name or '?')[:24]:<24} {_num(gpu.temperature_c, '.0f', '°C'):>5}"
        f" {power:>11}  util {bar(None if util is None else util / 100)}"
        f" {_num(util, '.0f', '%'):>4}  mem {bar(gpu.memory_fraction)} {memory:>15}"
        f"  {owners or '-'}"
    )
