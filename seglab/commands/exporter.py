"""`seglab exporter`: serve Prometheus metrics for every GPU and every active run."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from seglab.commands import add_command

DESCRIPTION = """\
Serve Prometheus metrics at http://BIND:PORT/metrics until Ctrl-C:

  seglab_gpu_*       every GPU of every host in hosts.yaml (labels host, index, uuid,
                     name): utilisation, memory, temperature, power, fan, clocks, ECC
  seglab_run_*       every active run in the registry (labels run_id, host): loss,
                     mIoU (0-1), images per second, iteration
  seglab_host_telemetry_up   1 while a host's telemetry is current

A value the driver does not report is left out (never exported as 0). The server
binds to the loopback address unless --bind says otherwise.

Example Prometheus scrape config:
  - job_name: seglab
    static_configs: [{targets: ["127.0.0.1:9400"]}]
"""


def register(subparsers: Any) -> None:
    """Add the `exporter` command."""
    parser = add_command(
        subparsers, "exporter", "serve Prometheus metrics for GPUs and runs", DESCRIPTION
    )
    parser.add_argument(
        "--port", type=int, default=9400, help="TCP port (default 9400; 0 picks a free one)"
    )
    parser.add_argument(
        "--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--host", metavar="H", help="only this host (a name from hosts.yaml)")
    parser.set_defaults(func=_exporter)


def _exporter(args: argparse.Namespace) -> int:
    from seglab.commands import CommandError

    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be between 0 and 65535, got {args.port}")
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from seglab.commands import CommandError
    from seglab.commands.gpus import open_telemetry
    from seglab.telemetry.exporter import TelemetryCollector, registry_runs, serve

    async with open_telemetry(args.host) as telemetry:
        collector = TelemetryCollector(telemetry.states, registry_runs)
        try:
            server, _ = serve(collector, args.port, args.bind)
        except OSError as exc:
            raise CommandError(f"cannot listen on {args.bind}:{args.port}: {exc}") from exc
        print(
            f"serving metrics on http://{args.bind}:{server.server_port}/metrics (Ctrl-C stops)",
            flush=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            server.shutdown()
            server.server_close()
    return 0
